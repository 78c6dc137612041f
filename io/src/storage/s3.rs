//! The `s3` input source and the `s3` publisher, over any S3-compatible service.
//!
//! **Input** ([`S3InputProvider`], Bacalhau params `Bucket`, `Key`, `Filter`, `Region`,
//! `Endpoint`; `VersionID` is accepted and ignored): a `Key` ending in `/` or `*`, or an empty
//! one, names a prefix and every object under it (optionally only keys matching the `Filter`
//! regex) is downloaded into the input's folder, keeping the key's path below the prefix's last
//! `/`; any other `Key` names the folder `Key/` if objects exist under it, else one object,
//! downloaded to a file named after its last segment.
//! Bucket contents are untrusted: a key whose relative path is absolute or contains `..` is
//! refused before anything is written, and the object count and total bytes are capped.
//!
//! **Publisher** ([`S3Publisher`], params `Bucket`, `Key`, `Endpoint`, `Region`, `Encoding`):
//! `Key` may hold `{jobID}`, `{executionID}`, `{nodeID}`, `{date}` (UTC `YYYYMMDD`) and
//! `{time}` (UTC `HHMMSS`). Encoding `gzip` (the default) uploads the results folder as one
//! deterministic tar.gz ([`crate::archive::pack_tar_gz`]) at `Key` (with `.tar.gz` appended
//! if missing, as Bacalhau does); `plain` uploads each file under `Key` as a prefix (a `/` is
//! appended if missing). Symlinks in the results are never followed (they could point at
//! host files). Files above [`MULTIPART_THRESHOLD`] go up as multipart uploads. The published
//! result is `{Type: s3, Params: {Bucket, Key, Region, Endpoint}}`.
//!
//! **Credentials** come from [`S3Config::credentials`], else from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else from object_store's AWS chain (web
//! identity, ECS, instance metadata). An `Endpoint` given in a job spec is user-controlled and
//! would receive requests signed with the node's credentials, so it is vetted like a
//! `urlDownload` URL against [`S3Config::endpoint_policy`] (the operator's
//! [`S3Config::default_endpoint`] is trusted). Requests use path-style addressing when an
//! endpoint is set (most S3-compatible servers need it) and plain http only for `http://`
//! endpoints.
//!
//! Failure classes: bad or refused parameters are `InvalidSpec`; a missing object or a failing
//! service is `InputUnavailable` (input) or `PublishFailed` (publisher); local I/O is `Internal`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gadus_core::model::{Job, SpecConfig};
use gadus_core::protocol::{ExecFailure, FailureKind};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::url::{UrlPolicy, vet_url};
use super::{InputProvider, Progress, Publisher};
use crate::executor::{PreparedInput, failure};

/// Files larger than this are uploaded in parts (S3 parts must be at least 5 MiB).
pub const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Size of one multipart part.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts in flight at once during a multipart upload.
const PART_CONCURRENCY: usize = 4;

/// Static S3 credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    // Never print the secret (configs end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl S3Credentials {
    /// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
    /// if the first two are set.
    pub fn from_env() -> Option<Self> {
        let access_key_id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|s| !s.is_empty())?;
        let secret_access_key =
            std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|s| !s.is_empty())?;
        let session_token = std::env::var("AWS_SESSION_TOKEN").ok().filter(|s| !s.is_empty());
        Some(S3Credentials { access_key_id, secret_access_key, session_token })
    }
}

/// Node-side S3 settings, shared by the input provider and the publisher.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Credentials; `None` means the environment, then object_store's AWS chain.
    pub credentials: Option<S3Credentials>,
    /// Region when the spec names none.
    pub default_region: String,
    /// Endpoint when the spec names none (`None`: AWS). Trusted: set by the operator.
    pub default_endpoint: Option<String>,
    /// Which `Endpoint` values from job specs may be contacted.
    pub endpoint_policy: UrlPolicy,
    /// Most bytes one `s3` input may download.
    pub max_input_bytes: u64,
    /// Most objects one prefix input may download.
    pub max_input_objects: u64,
    /// Limit on one S3 request (a whole GET body or one upload part).
    pub request_timeout: Duration,
}

impl Default for S3Config {
    /// AWS `us-east-1`, public endpoints only, 10 GiB / 100,000 objects per input, 10 minutes
    /// per request.
    fn default() -> Self {
        S3Config {
            credentials: None,
            default_region: "us-east-1".to_string(),
            default_endpoint: None,
            endpoint_policy: UrlPolicy::default(),
            max_input_bytes: 10 * 1024 * 1024 * 1024,
            max_input_objects: 100_000,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// Where a spec points: bucket, region, endpoint (as given or defaulted).
struct Target {
    bucket: String,
    region: String,
    endpoint: Option<String>,
}

/// Builds object_store clients for specs.
#[derive(Clone, Debug)]
struct Connector {
    config: Arc<S3Config>,
}

impl Connector {
    fn target(&self, spec: &SpecConfig, who: &str) -> Result<Target, ExecFailure> {
        let bucket = spec
            .param_str("Bucket")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                failure(FailureKind::InvalidSpec, format!("{who}: missing Bucket parameter"))
            })?
            .to_string();
        let region = spec
            .param_str("Region")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or(&self.config.default_region)
            .to_string();
        // Both end up in request URLs (the region in AWS's host name): a region like
        // `x.evil.example/` would send signed requests to another host.
        let bucket_ok = bucket.len() <= 255
            && bucket != "."
            && bucket != ".."
            && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !bucket_ok {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("{who}: invalid Bucket {bucket:?}"),
            ));
        }
        let region_ok =
            region.len() <= 64 && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !region_ok {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("{who}: invalid Region {region:?}"),
            ));
        }
        let endpoint = spec
            .param_str("Endpoint")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .or_else(|| self.config.default_endpoint.clone());
        Ok(Target { bucket, region, endpoint })
    }

    /// A client for `target`, after vetting a spec-supplied endpoint.
    async fn store(
        &self,
        spec: &SpecConfig,
        target: &Target,
        who: &str,
    ) -> Result<AmazonS3, ExecFailure> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
            });
        let mut options = ClientOptions::new()
            .with_timeout(self.config.request_timeout)
            .with_connect_timeout(Duration::from_secs(30));
        if let Some(endpoint) = &target.endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|e| {
                failure(
                    FailureKind::InvalidSpec,
                    format!("{who}: invalid Endpoint {endpoint:?}: {e}"),
                )
            })?;
            let from_spec = spec.param_str("Endpoint").is_some_and(|e| !e.trim().is_empty());
            if from_spec {
                vet_url(&self.config.endpoint_policy, &parsed, who).await?;
            }
            options = options.with_allow_http(parsed.scheme() == "http");
            builder =
                builder.with_endpoint(endpoint.as_str()).with_virtual_hosted_style_request(false);
        }
        builder = builder.with_client_options(options);
        if let Some(creds) = self.config.credentials.clone().or_else(S3Credentials::from_env) {
            builder = builder
                .with_access_key_id(creds.access_key_id)
                .with_secret_access_key(creds.secret_access_key);
            if let Some(token) = creds.session_token {
                builder = builder.with_token(token);
            }
        }
        builder.build().map_err(|e| {
            failure(FailureKind::InvalidSpec, format!("{who}: cannot configure S3 client: {e}"))
        })
    }
}

/// Downloads `s3` inputs.
#[derive(Clone, Debug)]
pub struct S3InputProvider {
    connector: Connector,
}

impl S3InputProvider {
    /// A provider using `config`.
    pub fn new(config: S3Config) -> Self {
        S3InputProvider { connector: Connector { config: Arc::new(config) } }
    }

    async fn download_prefix(
        &self,
        store: &AmazonS3,
        key: &str,
        filter: Option<&regex::Regex>,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<(), ExecFailure> {
        let config = &self.connector.config;
        let prefix = key.strip_suffix('*').unwrap_or(key);
        // List the folder holding the prefix; the prefix may end in a partial name (`logs/2024*`).
        let dir_len = prefix.rfind('/').map_or(0, |i| i + 1);
        let dir = &prefix[..dir_len];
        let list_path = match dir.trim_end_matches('/') {
            "" => None,
            d => Some(ObjectPath::parse(d).map_err(|e| {
                failure(
                    FailureKind::InvalidSpec,
                    format!("s3: Key {key:?} is not a valid object path: {e}"),
                )
            })?),
        };
        let mut listing = store.list(list_path.as_ref());
        let mut planned = Vec::new();
        let mut total: u64 = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| {
                failure(FailureKind::InputUnavailable, format!("s3: listing {key:?} failed: {e}"))
            })?;
            let object_key = meta.location.as_ref();
            if !object_key.starts_with(prefix) || object_key.ends_with('/') {
                continue;
            }
            if filter.is_some_and(|f| !f.is_match(object_key)) {
                continue;
            }
            let rel = safe_relative(&object_key[dir_len..]).ok_or_else(|| {
                failure(
                    FailureKind::InputUnavailable,
                    format!("s3: object key {object_key:?} would leave the input folder"),
                )
            })?;
            total = total.saturating_add(meta.size);
            if planned.len() as u64 >= config.max_input_objects {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!("s3: more than {} objects under {key:?}", config.max_input_objects),
                ));
            }
            if total > config.max_input_bytes {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!(
                        "s3: objects under {key:?} exceed the node's limit of {} bytes",
                        config.max_input_bytes
                    ),
                ));
            }
            planned.push((meta.location.clone(), rel));
        }
        if planned.is_empty() {
            return Err(failure(
                FailureKind::InputUnavailable,
                format!("s3: no objects match {key:?}"),
            ));
        }
        let mut budget = config.max_input_bytes;
        for (i, (location, rel)) in planned.iter().enumerate() {
            progress.report(&format!(
                "downloading s3 object {location} ({}/{})",
                i + 1,
                planned.len()
            ));
            let dest = work_dir.join(rel);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    failure(
                        FailureKind::Internal,
                        format!("s3: cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
            let got = get_to_file(store, location, &dest, budget).await?;
            budget -= got;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl InputProvider for S3InputProvider {
    fn source_type(&self) -> &'static str {
        "s3"
    }

    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure> {
        let t = self.connector.target(source, "s3")?;
        let key = source.param_str("Key").unwrap_or("").trim_start_matches('/').to_string();
        let filter = match source.param_str("Filter").filter(|f| !f.is_empty()) {
            Some(f) => {
                Some(regex::RegexBuilder::new(f).size_limit(1 << 20).build().map_err(|e| {
                    failure(FailureKind::InvalidSpec, format!("s3: invalid Filter {f:?}: {e}"))
                })?)
            }
            None => None,
        };
        let store = self.connector.store(source, &t, "s3").await?;
        let as_folder = PreparedInput::node_owned(target, work_dir.to_path_buf());
        if key.is_empty() || key.ends_with('/') || key.ends_with('*') {
            self.download_prefix(&store, &key, filter.as_ref(), work_dir, progress).await?;
            return Ok(as_folder);
        }
        let location = ObjectPath::parse(&key).map_err(|e| {
            failure(
                FailureKind::InvalidSpec,
                format!("s3: Key {key:?} is not a valid object path: {e}"),
            )
        })?;
        // Users often name a folder without its trailing `/`: if anything lives under `Key/`,
        // that is what they meant. (Listing rather than a HEAD on the key: some S3-compatible
        // servers answer a HEAD on a folder-like key with an error instead of 404.) A listing
        // the credentials may not do falls through to the plain GET.
        if let Some(Ok(_)) = store.list(Some(&location)).next().await {
            let folder = format!("{key}/");
            self.download_prefix(&store, &folder, filter.as_ref(), work_dir, progress).await?;
            return Ok(as_folder);
        }
        let name = location.filename().unwrap_or("file");
        let dest = work_dir.join(safe_relative(name).unwrap_or_else(|| PathBuf::from("file")));
        progress.report(&format!("downloading s3://{}/{key}", t.bucket));
        get_to_file(&store, &location, &dest, self.connector.config.max_input_bytes).await?;
        Ok(PreparedInput::node_owned(target, dest))
    }
}

/// Streams one object into `dest` (created anew, then made read-only), refusing more than
/// `budget` bytes; returns the bytes written. A failed download removes the partial file.
async fn get_to_file(
    store: &AmazonS3,
    location: &ObjectPath,
    dest: &Path,
    budget: u64,
) -> Result<u64, ExecFailure> {
    let result = async {
        let got = store.get(location).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                failure(FailureKind::InputUnavailable, format!("s3: object {location} not found"))
            }
            e => failure(
                FailureKind::InputUnavailable,
                format!("s3: fetching {location} failed: {e}"),
            ),
        })?;
        if got.meta.size > budget {
            return Err(failure(
                FailureKind::InputUnavailable,
                format!(
                    "s3: object {location} ({} bytes) exceeds the node's input limit",
                    got.meta.size
                ),
            ));
        }
        let mut file = tokio::fs::File::create_new(dest).await.map_err(|e| {
            failure(FailureKind::Internal, format!("s3: cannot create {}: {e}", dest.display()))
        })?;
        let mut stream = got.into_stream();
        let mut written: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                failure(
                    FailureKind::InputUnavailable,
                    format!("s3: reading {location} failed: {e}"),
                )
            })?;
            written += chunk.len() as u64;
            if written > budget {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!("s3: object {location} exceeds the node's input limit"),
                ));
            }
            file.write_all(&chunk).await.map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("s3: writing {} failed: {e}", dest.display()),
                )
            })?;
        }
        file.flush().await.map_err(|e| {
            failure(FailureKind::Internal, format!("s3: writing {} failed: {e}", dest.display()))
        })?;
        Ok(written)
    }
    .await;
    match result {
        Ok(written) => {
            set_read_only(dest).await?;
            Ok(written)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(dest).await;
            Err(e)
        }
    }
}

/// `rel` as a relative path with only normal components, or `None` if it is absolute, empty or
/// climbs with `..`.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

async fn set_read_only(path: &Path) -> Result<(), ExecFailure> {
    let io_err =
        |e: std::io::Error| failure(FailureKind::Internal, format!("s3: {}: {e}", path.display()));
    let mut perms = tokio::fs::metadata(path).await.map_err(io_err)?.permissions();
    perms.set_readonly(true);
    tokio::fs::set_permissions(path, perms).await.map_err(io_err)
}

/// How results are laid out in the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Gzip,
    Plain,
}

/// Publishes results to S3.
#[derive(Clone, Debug)]
pub struct S3Publisher {
    connector: Connector,
}

impl S3Publisher {
    /// A publisher using `config`.
    pub fn new(config: S3Config) -> Self {
        S3Publisher { connector: Connector { config: Arc::new(config) } }
    }
}

/// Replaces `{jobID}`, `{executionID}`, `{nodeID}`, `{date}` and `{time}` in a publisher `Key`.
/// `now` supplies the date and time (UTC).
pub fn substitute_key(
    key: &str,
    job_id: &str,
    execution_id: &str,
    node_id: &str,
    now: time::OffsetDateTime,
) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
    let clock = format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second());
    key.replace("{jobID}", job_id)
        .replace("{executionID}", execution_id)
        .replace("{nodeID}", node_id)
        .replace("{date}", &date)
        .replace("{time}", &clock)
}

#[async_trait::async_trait]
impl Publisher for S3Publisher {
    fn publisher_type(&self) -> &'static str {
        "s3"
    }

    async fn publish(
        &self,
        spec: &SpecConfig,
        job: &Job,
        execution_id: &str,
        node_id: &str,
        results_dir: &Path,
    ) -> Result<SpecConfig, ExecFailure> {
        let t = self.connector.target(spec, "s3 publisher")?;
        let raw_key =
            spec.param_str("Key").map(str::trim).filter(|k| !k.is_empty()).ok_or_else(|| {
                failure(FailureKind::InvalidSpec, "s3 publisher: missing Key parameter")
            })?;
        let encoding = match spec.param_str("Encoding").map(str::trim) {
            None | Some("") => Encoding::Gzip,
            Some(e) if e.eq_ignore_ascii_case("gzip") => Encoding::Gzip,
            Some(e) if e.eq_ignore_ascii_case("plain") => Encoding::Plain,
            Some(e) => {
                return Err(failure(
                    FailureKind::InvalidSpec,
                    format!("s3 publisher: unknown Encoding {e:?} (gzip or plain)"),
                ));
            }
        };
        let key = substitute_key(
            raw_key,
            &job.id,
            execution_id,
            node_id,
            time::OffsetDateTime::now_utc(),
        );
        let key = key.trim_start_matches('/').to_string();
        let store = self.connector.store(spec, &t, "s3 publisher").await?;
        let published_key = match encoding {
            Encoding::Gzip => {
                // As Bacalhau does: an archive key always ends in `.tar.gz`.
                let key = if key.ends_with(".tar.gz") { key } else { format!("{key}.tar.gz") };
                let location = object_path(&key)?;
                let archive = tempfile::NamedTempFile::new().map_err(|e| {
                    failure(FailureKind::Internal, format!("s3 publisher: temporary file: {e}"))
                })?;
                let (file, archive_path) = archive.into_parts();
                let dir = results_dir.to_path_buf();
                tokio::task::spawn_blocking(move || {
                    crate::archive::pack_tar_gz(&dir, std::io::BufWriter::new(file))
                        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                        .and_then(|f| f.sync_all())
                })
                .await
                .map_err(|e| {
                    failure(
                        FailureKind::Internal,
                        format!("s3 publisher: packing task failed: {e}"),
                    )
                })?
                .map_err(|e| {
                    failure(
                        FailureKind::Internal,
                        format!("s3 publisher: packing {} failed: {e}", results_dir.display()),
                    )
                })?;
                upload_file(&store, &location, &archive_path).await?;
                key
            }
            Encoding::Plain => {
                let prefix = if key.ends_with('/') { key } else { format!("{key}/") };
                for rel in regular_files(results_dir).await? {
                    let rel_key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    let location = object_path(&format!("{prefix}{rel_key}"))?;
                    upload_file(&store, &location, &results_dir.join(&rel)).await?;
                }
                prefix
            }
        };
        let mut result = SpecConfig::new("s3")
            .with_param("Bucket", t.bucket)
            .with_param("Key", published_key)
            .with_param("Region", t.region);
        if let Some(endpoint) = t.endpoint {
            result = result.with_param("Endpoint", endpoint);
        }
        Ok(result)
    }
}

fn object_path(key: &str) -> Result<ObjectPath, ExecFailure> {
    ObjectPath::parse(key.trim_end_matches('/')).map_err(|e| {
        failure(
            FailureKind::InvalidSpec,
            format!("s3 publisher: Key {key:?} is not a valid object path: {e}"),
        )
    })
}

/// Regular files under `root`, relative, sorted. Symlinks are skipped, never followed: a task
/// could link a host file into its outputs.
async fn regular_files(root: &Path) -> Result<Vec<PathBuf>, ExecFailure> {
    let io_err = |p: &Path, e: std::io::Error| {
        failure(FailureKind::Internal, format!("s3 publisher: reading {}: {e}", p.display()))
    };
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| io_err(&dir, e))?;
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_err(&dir, e))? {
            let ft = entry.file_type().await.map_err(|e| io_err(&entry.path(), e))?;
            let child = rel.join(entry.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads one local file: a single PUT up to [`MULTIPART_THRESHOLD`], multipart above it.
async fn upload_file(
    store: &AmazonS3,
    location: &ObjectPath,
    path: &Path,
) -> Result<(), ExecFailure> {
    let io_err = |e: std::io::Error| {
        failure(FailureKind::Internal, format!("s3 publisher: reading {}: {e}", path.display()))
    };
    let put_err = |e: object_store::Error| ExecFailure {
        kind: FailureKind::PublishFailed,
        message: format!("s3 publisher: uploading {location} failed: {e}"),
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
    let size = file.metadata().await.map_err(io_err)?.len();
    if size <= MULTIPART_THRESHOLD {
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut buf).await.map_err(io_err)?;
        store.put(location, PutPayload::from(buf)).await.map_err(put_err)?;
        return Ok(());
    }
    let upload = store.put_multipart(location).await.map_err(put_err)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(io_err(e));
            }
        };
        if let Err(e) = writer.wait_for_capacity(PART_CONCURRENCY).await {
            let _ = writer.abort().await;
            return Err(put_err(e));
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(put_err)?;
    Ok(())
}
