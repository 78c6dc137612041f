//! Trustless-gateway client: fetch blocks and whole DAGs over HTTP from peers' `/ipfs/{cid}`
//! endpoints and public gateways, verifying every block before it is stored.
//!
//! Protocol (IPFS "Trustless Gateway" spec): `GET {base}/ipfs/{cid}?format=raw` with
//! `Accept: application/vnd.ipld.raw` answers one block; `?format=car` with
//! `Accept: application/vnd.ipld.car` answers a CARv1 of the DAG. Nothing a gateway says is
//! believed: a block is stored only if it hashes to its CID, a CAR must name the requested
//! root, and a DAG fetch succeeds only if the root's DAG is complete afterwards. A failing,
//! lying or slow gateway costs one attempt; the next base URL is tried. A failed attempt
//! leaves nothing in the store (the CAR import is one session, rolled back on error).
//!
//! Bounds: blocks above [`MAX_BLOCK_SIZE`] are cut off while streaming (before buffering),
//! CARs above [`GatewayOptions::max_car_bytes`] likewise; connect, per-read (idle) and
//! per-request timeouts apply.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use reqwest::header::ACCEPT;

use super::MAX_BLOCK_SIZE;
use super::block::verify_block;
use super::car::{CarDecoder, CarImport, CarLimits, same_block};
use super::error::{ContentError, LocalError, RemoteError, Result, UntrustedError};
use super::store::ContentStore;

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any read (headers or body bytes) before the attempt is abandoned.
    pub idle_timeout: Duration,
    /// Whole-request limit for a single block.
    pub block_timeout: Duration,
    /// Whole-request limit for a CAR (`None`: only the idle timeout applies).
    pub car_timeout: Option<Duration>,
    /// Largest CAR accepted, in bytes.
    pub max_car_bytes: u64,
    /// Most blocks accepted in one CAR.
    pub max_car_blocks: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            block_timeout: Duration::from_secs(60),
            car_timeout: None,
            max_car_bytes: 64 << 30,
            max_car_blocks: 64 << 20,
        }
    }
}

/// What a DAG fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The base URL that delivered, or `None` if the DAG was already complete locally.
    pub source: Option<String>,
    /// Blocks received.
    pub blocks: u64,
    /// Blocks newly stored.
    pub blocks_added: u64,
}

/// Fetches content from a list of HTTP base URLs, in order.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    http: reqwest::Client,
    bases: Vec<String>,
    opts: GatewayOptions,
}

/// An attempt's failure: either the gateway's (try the next) or ours (stop).
enum Attempt {
    Gateway(String),
    Local(ContentError),
}

impl From<reqwest::Error> for Attempt {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display omits the cause ("error sending request"); keep the chain.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Self::Gateway(msg)
    }
}

impl From<ContentError> for Attempt {
    fn from(e: ContentError) -> Self {
        match e {
            // Bad bytes or limits hit are the gateway's fault: try another.
            ContentError::Untrusted(_) | ContentError::Request(_) | ContentError::Remote(_) => {
                Self::Gateway(e.to_string())
            }
            ContentError::Local(_) => Self::Local(e),
        }
    }
}

impl GatewayClient {
    /// A client over `bases` (e.g. `http://10.0.0.2:1234`, `https://trustless-gateway.link`);
    /// `/ipfs/{cid}` is appended.
    pub fn new(
        bases: impl IntoIterator<Item = impl Into<String>>,
        opts: GatewayOptions,
    ) -> Result<Self> {
        let mut list = Vec::new();
        for base in bases {
            let base: String = base.into();
            let url = reqwest::Url::parse(&base).map_err(|e| RemoteError::InvalidUrl {
                url: base.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(url.scheme(), "http" | "https")
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(RemoteError::InvalidUrl {
                    url: base,
                    reason: "need http(s) without query or fragment".into(),
                }
                .into());
            }
            list.push(base.trim_end_matches('/').to_owned());
        }
        if list.is_empty() {
            return Err(RemoteError::NoGateways.into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("gadus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        Ok(Self { http, bases: list, opts })
    }

    /// The configured base URLs.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// Returns the block, from the store if present, else from the first gateway that serves
    /// bytes matching `cid` (which are then stored, unpinned).
    pub async fn fetch_block(&self, store: &ContentStore, cid: &Cid) -> Result<Bytes> {
        if let Some(local) = blocking(store, {
            let cid = *cid;
            move |s| s.get_block(&cid)
        })
        .await?
        {
            return Ok(local);
        }
        let mut attempts = Vec::new();
        for base in &self.bases {
            let url = format!("{base}/ipfs/{cid}?format=raw");
            match self.try_block(store, cid, &url).await {
                Ok(data) => return Ok(data),
                Err(Attempt::Local(e)) => return Err(e),
                Err(Attempt::Gateway(reason)) => attempts.push((url, reason)),
            }
        }
        Err(RemoteError::AllFailed { cid: *cid, attempts }.into())
    }

    async fn try_block(
        &self,
        store: &ContentStore,
        cid: &Cid,
        url: &str,
    ) -> Result<Bytes, Attempt> {
        let mut resp = self
            .http
            .get(url)
            .header(ACCEPT, "application/vnd.ipld.raw")
            .timeout(self.opts.block_timeout)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(Attempt::Gateway(format!("HTTP {}", resp.status())));
        }
        let too_large = |size: u64| {
            Attempt::from(ContentError::from(UntrustedError::BlockTooLarge {
                size,
                max: MAX_BLOCK_SIZE as u64,
            }))
        };
        if let Some(len) = resp.content_length().filter(|&l| l > MAX_BLOCK_SIZE as u64) {
            return Err(too_large(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_BLOCK_SIZE {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        let body = Bytes::from(body);
        verify_block(cid, &body)?;
        let (cid, data) = (*cid, body.clone());
        blocking(store, move |s| s.put_block(&cid, &data)).await?;
        Ok(body)
    }

    /// Makes `root`'s whole DAG local: nothing to do if it already is, else one CAR request per
    /// gateway until one delivers a complete, verified DAG. Pins `root` if `pin`.
    pub async fn fetch_dag(
        &self,
        store: &ContentStore,
        root: &Cid,
        pin: bool,
    ) -> Result<FetchReport> {
        let complete = blocking(store, {
            let root = *root;
            move |s| {
                if s.first_missing(&root)?.is_some() {
                    return Ok(false);
                }
                if pin {
                    s.pin(&root)?;
                }
                Ok(true)
            }
        })
        .await;
        match complete {
            Ok(true) => return Ok(FetchReport { source: None, blocks: 0, blocks_added: 0 }),
            Ok(false) => {}
            // A malformed local block: refetching cannot replace it (same CID, same bytes).
            Err(e) => return Err(e),
        }
        let mut attempts = Vec::new();
        for base in &self.bases {
            let url = format!("{base}/ipfs/{root}?format=car");
            match self.try_car(store, root, &url, pin).await {
                Ok(import) => {
                    return Ok(FetchReport {
                        source: Some(base.clone()),
                        blocks: import.blocks,
                        blocks_added: import.blocks_added,
                    });
                }
                Err(Attempt::Local(e)) => return Err(e),
                Err(Attempt::Gateway(reason)) => attempts.push((url, reason)),
            }
        }
        Err(RemoteError::AllFailed { cid: *root, attempts }.into())
    }

    async fn try_car(
        &self,
        store: &ContentStore,
        root: &Cid,
        url: &str,
        pin: bool,
    ) -> Result<CarImport, Attempt> {
        let mut request = self.http.get(url).header(ACCEPT, "application/vnd.ipld.car");
        if let Some(total) = self.opts.car_timeout {
            request = request.timeout(total);
        }
        // Headers must arrive within the single-block budget even when the body may take long.
        let mut resp = tokio::time::timeout(self.opts.block_timeout, request.send())
            .await
            .map_err(|_| {
                Attempt::Gateway(format!(
                    "no response headers within {:?}",
                    self.opts.block_timeout
                ))
            })??;
        if !resp.status().is_success() {
            return Err(Attempt::Gateway(format!("HTTP {}", resp.status())));
        }
        let limits = CarLimits {
            max_total_bytes: self.opts.max_car_bytes,
            max_blocks: self.opts.max_car_blocks,
            ..CarLimits::default()
        };
        let mut decoder = CarDecoder::new(limits);
        // The session rolls back when dropped on any early return below.
        let mut writer = store.writer();
        let mut checked_root = false;
        while let Some(chunk) = resp.chunk().await? {
            decoder.push(&chunk)?;
            if !checked_root && let Some(roots) = decoder.roots()? {
                if !roots.iter().any(|r| same_block(r, root)) {
                    return Err(ContentError::from(UntrustedError::WrongRoot {
                        want: *root,
                        got: roots.to_vec(),
                    })
                    .into());
                }
                checked_root = true;
            }
            while let Some((cid, data)) = decoder.next_block()? {
                // Verified by the decoder. Memtable inserts: fast enough to do inline.
                writer.put_trusted(&cid, &[&data])?;
            }
        }
        decoder.finish()?;
        let blocks = decoder.blocks();
        let root = *root;
        blocking(store, move |s| s.finish_car_import(writer, vec![root], blocks, pin))
            .await
            .map_err(|e| {
                // finish_car_import reports an incomplete DAG as a CAR error: the gateway's fault.
                Attempt::from(e)
            })
    }
}

/// Runs store work (fjall reads, fsyncs) on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &ContentStore,
    f: impl FnOnce(&ContentStore) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ContentError::from(LocalError::Task(e.to_string())))?
}
