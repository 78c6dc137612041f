//! Node descriptions: what a node is and can do, and how the orchestrator sees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::resources::Resources;
use super::states::{NodeConnection, NodeMembership, NodeType};
use super::time::WallTime;

/// Build information (Bacalhau `models.BuildVersionInfo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildVersionInfo {
    /// Major version.
    #[serde(rename = "Major", default, skip_serializing_if = "String::is_empty")]
    pub major: String,
    /// Minor version.
    #[serde(rename = "Minor", default, skip_serializing_if = "String::is_empty")]
    pub minor: String,
    /// Semantic version with a `v` (Bacalhau's CLI compares it).
    #[serde(rename = "GitVersion", default)]
    pub git_version: String,
    /// Commit hash.
    #[serde(rename = "GitCommit", default)]
    pub git_commit: String,
    /// Never Go's zero time in practice; must be valid RFC 3339.
    #[serde(rename = "BuildDate", default)]
    pub build_date: WallTime,
    /// Operating system.
    #[serde(rename = "GOOS", default)]
    pub goos: String,
    /// Architecture.
    #[serde(rename = "GOARCH", default)]
    pub goarch: String,
}

/// What a compute node offers (Bacalhau `models.ComputeNodeInfo`; note `QueueCapacity`
/// and the lower-case `address`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputeNodeInfo {
    /// `docker`, `wasm`, `noop`.
    #[serde(default)]
    pub execution_engines: Vec<String>,
    /// `ipfs`, `local`, `s3`, `noop`.
    #[serde(default)]
    pub publishers: Vec<String>,
    /// `ipfs`, `urlDownload`, `s3`, `inline`, `local`.
    #[serde(default)]
    pub storage_sources: Vec<String>,
    /// Total allocatable capacity.
    #[serde(default)]
    pub max_capacity: Resources,
    /// Capacity reserved by queued executions.
    #[serde(rename = "QueueCapacity", default)]
    pub queue_capacity: Resources,
    /// Capacity free now.
    #[serde(default)]
    pub available_capacity: Resources,
    /// The largest single job accepted.
    #[serde(default)]
    pub max_job_requirements: Resources,
    /// Executions running now.
    #[serde(default)]
    pub running_executions: i64,
    /// Executions waiting for capacity.
    #[serde(default)]
    pub enqueued_executions: i64,
    /// Where the node can be reached (e.g. its published-results server).
    #[serde(rename = "address", default)]
    pub address: String,
}

/// A node's self-description (Bacalhau `models.NodeInfo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// Stable ID (derived from the node's key).
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// `Requester` or `Compute` (a hybrid node reports `Compute`... with compute info).
    #[serde(default)]
    pub node_type: NodeType,
    /// Labels jobs can select on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Protocols spoken.
    #[serde(default)]
    pub supported_protocols: Vec<String>,
    /// Compute capabilities.
    #[serde(default)]
    pub compute_node_info: ComputeNodeInfo,
    /// Build information.
    #[serde(default)]
    pub bacalhau_version: BuildVersionInfo,
}

/// Connection details (Bacalhau HEAD `models.ConnectionState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectionState {
    /// Connected or not.
    #[serde(default)]
    pub status: NodeConnection,
    /// Last heartbeat received.
    #[serde(default)]
    pub last_heartbeat: WallTime,
    /// Last sequence number seen from the node.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub last_compute_seq_num: u64,
    /// Last sequence number sent by the orchestrator.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub last_orchestrator_seq_num: u64,
    /// Since when connected.
    #[serde(default)]
    pub connected_since: WallTime,
    /// Since when disconnected.
    #[serde(default)]
    pub disconnected_since: WallTime,
    /// Last connection error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A node as the orchestrator tracks it (Bacalhau HEAD `models.NodeState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeState {
    /// The node's description.
    #[serde(default)]
    pub info: NodeInfo,
    /// Approval.
    #[serde(default)]
    pub membership: NodeMembership,
    /// Liveness.
    #[serde(default)]
    pub connection: NodeConnection,
    /// Liveness details.
    #[serde(default)]
    pub connection_state: ConnectionState,
}
