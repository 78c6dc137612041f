//! Content routes: the node as an IPFS trustless gateway, CAR upload, and the `local`
//! publisher's result archives.
//!
//! | route | what |
//! |---|---|
//! | `GET/HEAD /ipfs/{cid}[/path]` | (content missing here is first fetched from the cluster's peers and configured gateways, verified and pinned) a file's bytes; a directory listing (HTML, or JSON with `Accept: application/json`); a CAR of the DAG with `?format=car` or `Accept: application/vnd.ipld.car`; one block with `?format=raw` or `Accept: application/vnd.ipld.raw` |
//! | `POST /api/v1/data/car` | imports a CARv1 body (verified, all or nothing, roots pinned): what `gadus data add` and `gadus data import` send |
//! | `GET /results/{execution-id}.tar.gz` | archives written by the `local` publisher |
//!
//! Peers fetch from each other through `/local/ipfs/...`, the same gateway restricted to what
//! the node holds: were peers to forward on each other's behalf, two nodes could ask each
//! other for a CID neither has, forever. Bodies stream from the store on blocking
//! threads, so a multi-GiB file never sits in memory. These routes are exempt from the API's
//! body buffering and request timeout (see `edge` in the parent module); the CAR upload has
//! its own limits.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use gadus_io::content::{
    CarImportOptions, Cid, ContentError, ContentStore, EntryKind, RequestError, parse_content_path,
};
use serde::Deserialize;
use serde_json::json;

use super::{ApiErr, AppState};

/// Largest CAR accepted by `POST /api/v1/data/car`.
pub const MAX_CAR_UPLOAD: u64 = 64 << 30;

/// Routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ipfs/{*path}", get(gateway::<true>).head(gateway::<true>))
        .route("/local/ipfs/{*path}", get(gateway::<false>).head(gateway::<false>))
        .route("/api/v1/data/car", post(import_car))
        .route("/results/{file}", get(result_archive))
}

/// Whether a path is served by these streaming routes (no body buffering, no timeout).
pub fn is_streaming(path: &str) -> bool {
    path.starts_with("/ipfs/")
        || path.starts_with("/local/ipfs/")
        || path.starts_with("/results/")
        || path == "/api/v1/data/car"
}

#[derive(Debug, Deserialize)]
struct GatewayQuery {
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Car,
    Raw,
}

fn content_err(e: ContentError) -> ApiErr {
    match e {
        ContentError::Request(r) => match *r {
            RequestError::MissingBlock(cid) => {
                ApiErr::not_found(format!("block {cid} is not held by this node"))
                    .component("Content")
            }
            other => ApiErr::bad_request(other.to_string()).component("Content"),
        },
        other => ApiErr::internal(other.to_string()).component("Content"),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> Result<T, ApiErr> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiErr::internal(e.to_string()))?
        .map_err(content_err)
}

fn store_of(s: &AppState) -> Result<ContentStore, ApiErr> {
    s.content.clone().ok_or_else(|| {
        ApiErr::new(StatusCode::NOT_IMPLEMENTED, "NotImplemented", "this node has no content store")
    })
}

/// `/ipfs/...` (`FETCH`: missing content is fetched from peers first) and `/local/ipfs/...`
/// (only what this node holds).
async fn gateway<const FETCH: bool>(
    State(s): State<AppState>,
    Path(path): Path<String>,
    Query(q): Query<GatewayQuery>,
    headers: HeaderMap,
    method: axum::http::Method,
) -> Result<Response, ApiErr> {
    serve(s, path, q, headers, method, FETCH).await
}

/// Makes `root`'s DAG local, fetching it from peers and gateways if it is incomplete. With no
/// source known, the request is answered from what is here (a 404 for what is not).
async fn fetch_missing(s: &AppState, store: &ContentStore, root: Cid) -> Result<(), ApiErr> {
    let Some(sources) = &s.content_sources else { return Ok(()) };
    match sources.make_local(store, &root).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.remote(), Some(gadus_io::content::RemoteError::NoGateways)) => Ok(()),
        Err(e) => Err(ApiErr::not_found(format!(
            "{root} is not on this node and no peer delivered it: {e}"
        ))
        .component("Content")),
    }
}

async fn serve(
    s: AppState,
    path: String,
    q: GatewayQuery,
    headers: HeaderMap,
    method: axum::http::Method,
    fetch: bool,
) -> Result<Response, ApiErr> {
    let store = store_of(&s)?;
    let (root, inner) = parse_content_path(&path).map_err(content_err)?;
    if fetch {
        fetch_missing(&s, &store, root).await?;
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match q.format.as_deref() {
        Some("car") => Format::Car,
        Some("raw") => Format::Raw,
        Some(f) if !f.is_empty() => {
            return Err(ApiErr::bad_request(format!("unknown format {f:?} (car or raw)")));
        }
        _ if accept.contains("application/vnd.ipld.car") => Format::Car,
        _ if accept.contains("application/vnd.ipld.raw") => Format::Raw,
        _ => Format::Plain,
    };
    let head = method == axum::http::Method::HEAD;
    let st = store.clone();
    let target = blocking(move || st.resolve(&root, &inner)).await?;
    let etag = format!("\"{target}\"");
    match format {
        Format::Raw => {
            let st = store.clone();
            let block = blocking(move || st.get_block(&target)).await?.ok_or_else(|| {
                ApiErr::not_found(format!("block {target} is not held by this node"))
            })?;
            let mut r = (
                [
                    (header::CONTENT_TYPE, "application/vnd.ipld.raw".to_string()),
                    (header::ETAG, etag),
                ],
                if head { Body::empty() } else { Body::from(block) },
            )
                .into_response();
            immutable(&mut r);
            Ok(r)
        }
        Format::Car => {
            let st = store.clone();
            if let Some(missing) = blocking(move || st.first_missing(&target)).await? {
                return Err(ApiErr::not_found(format!(
                    "the DAG of {target} is incomplete on this node (block {missing} is missing)"
                )));
            }
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(
                    store
                        .car_chunks(&target)
                        .into_stream()
                        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))),
                )
            };
            let mut r = (
                [
                    (header::CONTENT_TYPE, "application/vnd.ipld.car; version=1".to_string()),
                    (header::ETAG, etag),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{target}.car\"")),
                ],
                body,
            )
                .into_response();
            immutable(&mut r);
            Ok(r)
        }
        Format::Plain => {
            let st = store.clone();
            let stat = blocking(move || st.stat(&target)).await?;
            match stat.kind {
                EntryKind::Directory => listing(&store, &path, target, accept, head).await,
                EntryKind::File | EntryKind::Symlink => {
                    let st = store.clone();
                    let reader = blocking(move || st.cat(&target, "")).await?;
                    let mut headers = vec![
                        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                        (header::ETAG, etag),
                    ];
                    if let Some(n) = stat.size {
                        headers.push((header::CONTENT_LENGTH, n.to_string()));
                    }
                    let body = if head {
                        Body::empty()
                    } else {
                        Body::from_stream(
                            reader
                                .into_stream()
                                .map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))),
                        )
                    };
                    let mut r = (StatusCode::OK, body).into_response();
                    for (k, v) in headers {
                        if let Ok(v) = v.parse() {
                            r.headers_mut().insert(k, v);
                        }
                    }
                    immutable(&mut r);
                    Ok(r)
                }
            }
        }
    }
}

fn immutable(r: &mut Response) {
    if let Ok(v) = "public, max-age=29030400, immutable".parse() {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
}

async fn listing(
    store: &ContentStore,
    path: &str,
    dir: Cid,
    accept: &str,
    head: bool,
) -> Result<Response, ApiErr> {
    let st = store.clone();
    let entries = blocking(move || st.ls(&dir, "")).await?;
    if accept.contains("application/json") {
        let items: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "Name": e.name,
                    "Hash": e.cid.to_string(),
                    "Size": e.size.or(e.tsize),
                    "Type": match e.kind {
                        Some(EntryKind::Directory) => "directory",
                        Some(EntryKind::Symlink) => "symlink",
                        Some(EntryKind::File) => "file",
                        None => "unknown",
                    },
                })
            })
            .collect();
        let body = json!({"Hash": dir.to_string(), "Links": items});
        return Ok(super::json_ok(&body));
    }
    let base = format!("/ipfs/{}", path.trim_end_matches('/'));
    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>Index of {}</h1><ul>\n",
        escape(&base),
        escape(&base)
    );
    for e in &entries {
        let slash = if e.kind == Some(EntryKind::Directory) { "/" } else { "" };
        html.push_str(&format!(
            "<li><a href=\"{}/{}\">{}{slash}</a> {}</li>\n",
            escape(&base),
            escape(&e.name),
            escape(&e.name),
            e.size.or(e.tsize).map(|n| format!("({n} B)")).unwrap_or_default()
        ));
    }
    html.push_str("</ul></body></html>\n");
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        if head { String::new() } else { html },
    )
        .into_response())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn import_car(State(s): State<AppState>, body: Body) -> Result<Response, ApiErr> {
    let store = store_of(&s)?;
    // Spooled to a file first: the import is synchronous and all-or-nothing, and the body
    // may be far larger than memory.
    let spool_dir = s.data_dir.join("tmp");
    tokio::fs::create_dir_all(&spool_dir)
        .await
        .map_err(|e| ApiErr::internal(format!("creating {}: {e}", spool_dir.display())))?;
    let spool = tempfile_in(&spool_dir);
    let mut file = tokio::fs::File::create(&spool)
        .await
        .map_err(|e| ApiErr::internal(format!("creating {}: {e}", spool.display())))?;
    let guard = RemoveOnDrop(spool.clone());
    let limits = &s.config.data_store;
    let max = limits.max_upload_bytes.min(MAX_CAR_UPLOAD);
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut checked_at = 0u64;
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiErr::bad_request(format!("reading the body: {e}")))?;
        total += chunk.len() as u64;
        if total > max {
            return Err(ApiErr::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequest",
                format!("CAR exceeds {max} bytes (DataStore.MaxUploadBytes)"),
            ));
        }
        // The spool must not eat the node's last free space: checked every 16 MiB.
        if total - checked_at >= 16 << 20 || checked_at == 0 {
            checked_at = total;
            keeps_free_space(&s, &spool_dir, 0)?;
        }
        file.write_all(&chunk).await.map_err(|e| ApiErr::internal(e.to_string()))?;
    }
    file.flush().await.map_err(|e| ApiErr::internal(e.to_string()))?;
    drop(file);
    // The import copies the blocks into the store: it needs that much room again, and the
    // store must stay within its quota.
    keeps_free_space(&s, &spool_dir, total)?;
    let (fs_size, _) = crate::filesystem_space(&spool_dir).unwrap_or((u64::MAX, u64::MAX));
    let quota = crate::share_of(&limits.quota, fs_size as f64)
        .map_err(|e| ApiErr::internal(format!("DataStore.Quota: {e}")))? as u64;
    let path = spool.clone();
    let report = tokio::task::spawn_blocking(move || {
        let held = store.stats().map_err(|e| (false, e.to_string()))?.bytes;
        if held.saturating_add(total) > quota {
            return Err((
                true,
                format!("the content store holds {held} bytes; this {total}-byte CAR would take it past its quota of {quota} bytes (DataStore.Quota)"),
            ));
        }
        let f = std::fs::File::open(&path).map_err(|e| (false, e.to_string()))?;
        store
            .import_car(std::io::BufReader::new(f), &CarImportOptions::default())
            .map_err(|e| (false, e.to_string()))
    })
    .await
    .map_err(|e| ApiErr::internal(e.to_string()))?
    .map_err(|(full, e)| {
        if full {
            insufficient_storage(e)
        } else {
            ApiErr::bad_request(format!("CAR import refused: {e}")).component("Content")
        }
    })?;
    drop(guard);
    Ok(super::json_ok(&json!({
        "Roots": report.roots.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "Blocks": report.blocks,
        "BlocksAdded": report.blocks_added,
        "Bytes": total,
    })))
}

fn insufficient_storage(message: String) -> ApiErr {
    ApiErr::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", message)
        .component("Content")
}

/// Refuses (507) when taking `more` bytes would leave the data directory's filesystem with
/// less than `DataStore.MinFreeDisk`.
fn keeps_free_space(s: &AppState, dir: &std::path::Path, more: u64) -> Result<(), ApiErr> {
    let Some((size, free)) = crate::filesystem_space(dir) else { return Ok(()) };
    let floor = crate::share_of(&s.config.data_store.min_free_disk, size as f64)
        .map_err(|e| ApiErr::internal(format!("DataStore.MinFreeDisk: {e}")))?
        as u64;
    if free.saturating_sub(more) < floor {
        return Err(insufficient_storage(format!(
            "the node keeps {floor} bytes free on its data disk (DataStore.MinFreeDisk) and has {free}; this upload needs {more} more"
        )));
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &std::path::Path) -> PathBuf {
    dir.join(format!("upload-{}.car", super::uuid_v4()))
}

async fn result_archive(
    State(s): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiErr> {
    let Some(publisher) = &s.local_publisher else {
        return Err(ApiErr::not_found("the local publisher is not enabled on this node"));
    };
    let path = publisher
        .archive_path(&file)
        .ok_or_else(|| ApiErr::not_found(format!("no result archive {file:?}")))?;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiErr::not_found(format!("no result archive {file:?} on this node")))?;
    let len = f.metadata().await.map(|m| m.len()).ok();
    let mut r = Body::from_stream(file_chunks(f)).into_response();
    let h = r.headers_mut();
    if let Ok(v) = "application/gzip".parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = len
        && let Ok(v) = n.to_string().parse()
    {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(r)
}

/// A file as a stream of 64 KiB chunks.
fn file_chunks(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures::stream::unfold(Some(f), |state| async move {
        use tokio::io::AsyncReadExt;
        let mut f = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
