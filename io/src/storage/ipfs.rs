//! `ipfs` input sources and the `ipfs` publisher, both over the embedded content store.
//!
//! An input CID is served from the local store when its whole DAG is there; otherwise it is
//! fetched from the cluster's peers and then the configured gateways with the trustless-gateway
//! protocol (every block verified against its CID before it is stored, so a lying peer can
//! corrupt nothing), pinned, and exported to the execution's work directory. The list of peers
//! changes as nodes come and go, so it is read at each fetch.
//!
//! Publishing imports the results folder with Kubo's default layout (CIDv0), pins it, and
//! returns `{Type: ipfs, Params: {CID}}`; any node's `/ipfs/{cid}` or `gadus data get` can then
//! read it.

use std::path::Path;
use std::sync::{Arc, RwLock};

use gadus_core::model::{Job, SpecConfig};
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::{InputProvider, Progress, Publisher};
use crate::content::{
    Cid, ContentError, ContentStore, GatewayClient, GatewayOptions, ImportOptions, LocalError,
    RemoteError, parse_content_path,
};
use crate::executor::{PreparedInput, failure};

/// Where missing content may come from: peers' API base URLs (updated by the node as the
/// cluster changes) and static gateways from the config.
#[derive(Debug, Default)]
pub struct ContentSources {
    peers: RwLock<Vec<String>>,
    gateways: Vec<String>,
    /// What a peer's advertised API URL must pass (the urlDownload policy).
    peer_policy: crate::storage::url::UrlPolicy,
}

/// Peers kept as content sources (an attacker announcing many identities cannot grow it).
const MAX_PEER_SOURCES: usize = 1024;

impl ContentSources {
    /// Sources with a fixed gateway list; peers' API URLs are held to `peer_policy`.
    pub fn new(gateways: Vec<String>, peer_policy: crate::storage::url::UrlPolicy) -> Self {
        Self { peers: RwLock::new(Vec::new()), gateways, peer_policy }
    }

    /// Adds a peer by the API URL it advertises, once vetted
    /// ([`crate::storage::url::vet_peer_api`]); `connected_from` is the address its
    /// connection comes from. Reads go to its local-only gateway (`<api>/local`).
    pub fn add_peer(
        &self,
        api: &str,
        connected_from: Option<std::net::IpAddr>,
    ) -> Result<(), String> {
        let base = crate::storage::url::vet_peer_api(&self.peer_policy, api, connected_from)?;
        let peer = format!("{base}/local");
        if let Ok(mut p) = self.peers.write()
            && !p.contains(&peer)
            && p.len() < MAX_PEER_SOURCES
        {
            p.push(peer);
        }
        Ok(())
    }

    /// Peers first (they are close), then gateways.
    pub fn all(&self) -> Vec<String> {
        let mut v = self.peers.read().map(|p| p.clone()).unwrap_or_default();
        v.extend(self.gateways.iter().cloned());
        v
    }

    /// Makes `root`'s whole DAG local in `store`: nothing to do if it already is; otherwise it
    /// is fetched from the peers, then the gateways (every block verified), and pinned.
    /// With no source known, an incomplete DAG is [`RemoteError::NoGateways`].
    pub async fn make_local(&self, store: &ContentStore, root: &Cid) -> Result<(), ContentError> {
        let bases = self.all();
        if bases.is_empty() {
            let (s, r) = (store.clone(), *root);
            let missing = tokio::task::spawn_blocking(move || s.first_missing(&r))
                .await
                .map_err(|e| ContentError::from(LocalError::Task(e.to_string())))??;
            return match missing {
                None => Ok(()),
                Some(_) => Err(RemoteError::NoGateways.into()),
            };
        }
        // fetch_dag returns at once when the DAG is already complete here.
        GatewayClient::new(bases, GatewayOptions::default())?
            .fetch_dag(store, root, true)
            .await
            .map(|_| ())
    }
}

/// The `ipfs` input provider.
#[derive(Clone)]
pub struct IpfsProvider {
    store: ContentStore,
    sources: Arc<ContentSources>,
}

impl IpfsProvider {
    /// A provider over `store`, fetching what is missing from `sources`.
    pub fn new(store: ContentStore, sources: Arc<ContentSources>) -> Self {
        Self { store, sources }
    }

    /// Makes `root`'s DAG local (fetching it if needed), as an input failure when it cannot.
    pub async fn ensure_local(&self, root: &Cid) -> Result<(), ExecFailure> {
        self.sources.make_local(&self.store, root).await.map_err(|e| match e.remote() {
            Some(RemoteError::NoGateways) => ExecFailure {
                kind: FailureKind::InputUnavailable,
                message: format!(
                    "CID {root} is not in this node's store and no peers or gateways are known"
                ),
            },
            _ if e.local().is_some() => {
                failure(FailureKind::Internal, format!("fetching {root}: {e}"))
            }
            _ => ExecFailure {
                kind: FailureKind::InputUnavailable,
                message: format!("fetching {root}: {e}"),
            },
        })
    }
}

fn cid_param(source: &SpecConfig) -> Result<(Cid, String), ExecFailure> {
    let raw = source.param_str("CID").ok_or_else(|| ExecFailure {
        kind: FailureKind::InvalidSpec,
        message: "ipfs input needs a CID parameter".into(),
    })?;
    parse_content_path(raw).map_err(|e| ExecFailure {
        kind: FailureKind::InvalidSpec,
        message: format!("ipfs input CID {raw:?}: {e}"),
    })
}

#[async_trait::async_trait]
impl InputProvider for IpfsProvider {
    fn source_type(&self) -> &'static str {
        "ipfs"
    }

    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure> {
        let (root, path) = cid_param(source)?;
        progress.report(&format!("resolving {root}"));
        self.ensure_local(&root).await?;
        let dest = work_dir.join("data");
        let store = self.store.clone();
        let d = dest.clone();
        tokio::task::spawn_blocking(move || {
            let cid = store.resolve(&root, &path)?;
            store.export(&cid, &d)
        })
        .await
        .map_err(|e| failure(FailureKind::Internal, e.to_string()))?
        .map_err(|e| ExecFailure {
            kind: FailureKind::InputUnavailable,
            message: format!("exporting {root}: {e}"),
        })?;
        Ok(PreparedInput::node_owned(target, dest))
    }

    async fn is_local(&self, source: &SpecConfig) -> bool {
        let Ok((root, _)) = cid_param(source) else { return false };
        let s = self.store.clone();
        tokio::task::spawn_blocking(move || matches!(s.first_missing(&root), Ok(None)))
            .await
            .unwrap_or(false)
    }
}

/// The `ipfs` publisher.
#[derive(Clone)]
pub struct IpfsPublisher {
    store: ContentStore,
}

impl IpfsPublisher {
    /// A publisher into `store`.
    pub fn new(store: ContentStore) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl Publisher for IpfsPublisher {
    fn publisher_type(&self) -> &'static str {
        "ipfs"
    }

    async fn publish(
        &self,
        _spec: &SpecConfig,
        _job: &Job,
        _execution_id: &str,
        _node_id: &str,
        results_dir: &Path,
    ) -> Result<SpecConfig, ExecFailure> {
        let store = self.store.clone();
        let dir = results_dir.to_path_buf();
        let imported = tokio::task::spawn_blocking(move || {
            store.import_path(&dir, &ImportOptions::kubo_v0().with_pin(true))
        })
        .await
        .map_err(|e| failure(FailureKind::Internal, e.to_string()))?
        .map_err(|e| ExecFailure {
            kind: FailureKind::PublishFailed,
            message: format!("importing results into the content store: {e}"),
        })?;
        Ok(SpecConfig::new("ipfs").with_param("CID", imported.cid.to_string()))
    }
}
