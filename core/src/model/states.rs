//! Enumerations and their wire encodings — the first thing that breaks a Bacalhau client.
//!
//! | type | encoding |
//! |---|---|
//! | [`JobStateType`] | string, case-insensitive on input, unknown → `Undefined` |
//! | [`ExecutionStateType`] | integer, v1.6+ numbering |
//! | [`ExecutionDesiredStateType`] | integer |
//! | [`JobHistoryType`] | string |
//! | [`NodeType`] | string, error on unknown (never emits the undefined value) |
//! | [`NodeMembership`], [`NodeConnection`] | upper-case string |
//! | [`JobType`] | string; anything else is kept so `validate()` can name it |

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a string-encoded enum with case-insensitive decoding.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),* $(,)? }
        unknown: $unknown:tt
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The exact wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Case-insensitive parse of the wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim();
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                string_enum!(@unknown $name, s, $unknown)
            }
        }
    };
    (@unknown $name:ident, $s:ident, error) => {
        $name::parse(&$s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown {} {:?} (expected one of: {})",
                stringify!($name),
                $s,
                $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    };
    (@unknown $name:ident, $s:ident, $default:ident) => {
        Ok($name::parse(&$s).unwrap_or($name::$default))
    };
}

/// Declares an integer-encoded enum.
macro_rules! int_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire number.
            pub fn as_i64(self) -> i64 {
                match self { $($name::$variant => $num),* }
            }

            /// From the wire number.
            pub fn from_i64(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$variant),)* _ => None }
            }

            /// The Go constant name without its prefix (for humans and logs).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_i64(self.as_i64())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = i64::deserialize(d)?;
                $name::from_i64(n).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} {n}", stringify!($name)))
                })
            }
        }
    };
}

string_enum! {
    /// A job's lifecycle state. Terminal: Completed, Failed, Stopped.
    JobStateType {
        #[default]
        Undefined = "Undefined",
        Pending = "Pending",
        Queued = "Queued",
        Running = "Running",
        Completed = "Completed",
        Failed = "Failed",
        Stopped = "Stopped",
    }
    unknown: Undefined
}

impl JobStateType {
    /// Completed, Failed and Stopped are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }
}

int_enum! {
    /// The compute-side state of an execution (Bacalhau v1.6+ numbering).
    ExecutionStateType {
        #[default]
        Undefined = 0,
        New = 1,
        AskForBid = 2,
        AskForBidAccepted = 3,
        AskForBidRejected = 4,
        BidAccepted = 5,
        Running = 6,
        Publishing = 7,
        BidRejected = 8,
        Completed = 9,
        Failed = 10,
        Cancelled = 11,
    }
}

impl ExecutionStateType {
    /// No further transition is legal from here.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::AskForBidRejected
                | Self::BidRejected
                | Self::Completed
                | Self::Failed
                | Self::Cancelled
        )
    }

    /// Terminal without success: counts as a failed attempt for retries and ranking.
    pub fn is_discarded(self) -> bool {
        matches!(self, Self::AskForBidRejected | Self::BidRejected | Self::Failed | Self::Cancelled)
    }

    /// Holding (or about to hold) compute capacity on its node.
    pub fn is_executing(self) -> bool {
        matches!(self, Self::BidAccepted | Self::Running | Self::Publishing)
    }
}

int_enum! {
    /// What the orchestrator wants an execution to do.
    ExecutionDesiredStateType {
        #[default]
        Pending = 0,
        Running = 1,
        Stopped = 2,
    }
}

string_enum! {
    /// Whether a history entry is about the job or one execution.
    JobHistoryType {
        #[default]
        Undefined = "Undefined",
        JobLevel = "JobLevel",
        ExecutionLevel = "ExecutionLevel",
    }
    unknown: Undefined
}

string_enum! {
    /// A node's role as it reports it. Bacalhau's CLI rejects any other string.
    NodeType {
        Requester = "Requester",
        #[default]
        Compute = "Compute",
    }
    unknown: error
}

string_enum! {
    /// Cluster membership decided by an operator (or automatically).
    NodeMembership {
        #[default]
        Pending = "PENDING",
        Approved = "APPROVED",
        Rejected = "REJECTED",
    }
    unknown: error
}

string_enum! {
    /// Liveness as seen by the orchestrator.
    NodeConnection {
        Connected = "CONNECTED",
        #[default]
        Disconnected = "DISCONNECTED",
    }
    unknown: error
}

string_enum! {
    /// How a task may reach the network (HEAD/v1.7+ names).
    ///
    /// gadus treats `Default` like `None` for containers: no network unless asked for.
    NetworkType {
        #[default]
        Default = "Default",
        None = "None",
        Host = "Host",
        Full = "Full",
        Http = "HTTP",
        Bridge = "Bridge",
    }
    unknown: error
}

impl NetworkType {
    /// Whether a task with this network type asks for any network access at all.
    pub fn is_networked(self) -> bool {
        !matches!(self, Self::Default | Self::None)
    }

    /// Port mappings make sense only where the task shares or bridges the host network.
    pub fn supports_ports(self) -> bool {
        matches!(self, Self::Host | Self::Bridge | Self::Full)
    }
}

/// The kind of job, which picks its scheduler.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobType {
    /// Runs to completion on `Count` nodes.
    Batch,
    /// Keeps `Count` replicas running.
    Service,
    /// Runs once on every matching node.
    Ops,
    /// Runs on every matching node, including nodes that join later.
    Daemon,
    /// The `Type` key was absent or empty.
    #[default]
    Missing,
    /// A value gadus does not know; kept verbatim so validation can report it.
    Unknown(String),
}

impl JobType {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            JobType::Batch => "batch",
            JobType::Service => "service",
            JobType::Ops => "ops",
            JobType::Daemon => "daemon",
            JobType::Missing => "",
            JobType::Unknown(s) => s,
        }
    }

    /// Parses the wire spelling (exact, like Bacalhau's validation).
    pub fn parse(s: &str) -> Self {
        match s {
            "batch" => JobType::Batch,
            "service" => JobType::Service,
            "ops" => JobType::Ops,
            "daemon" => JobType::Daemon,
            "" => JobType::Missing,
            other => JobType::Unknown(other.to_string()),
        }
    }

    /// Service and daemon jobs never complete on their own.
    pub fn is_long_running(&self) -> bool {
        matches!(self, JobType::Service | JobType::Daemon)
    }

    /// Ops and daemon jobs target every matching node instead of `Count` of them.
    pub fn targets_all_nodes(&self) -> bool {
        matches!(self, JobType::Ops | JobType::Daemon)
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| JobType::parse(&s))
    }
}

/// A state with an optional human message and details — `{StateType, Message?, Details?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State<T> {
    /// The state itself.
    #[serde(default)]
    pub state_type: T,
    /// Why the state was entered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable detail.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl<T> State<T> {
    /// A state without message.
    pub fn new(state_type: T) -> Self {
        State { state_type, message: String::new(), details: BTreeMap::new() }
    }

    /// A state with a message.
    pub fn with_message(state_type: T, message: impl Into<String>) -> Self {
        State { state_type, message: message.into(), details: BTreeMap::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_is_a_case_insensitive_string() {
        assert_eq!(serde_json::to_string(&JobStateType::Queued).unwrap(), "\"Queued\"");
        let s: JobStateType = serde_json::from_str("\"cOmPlEtEd\"").unwrap();
        assert_eq!(s, JobStateType::Completed);
        let s: JobStateType = serde_json::from_str("\"bogus\"").unwrap();
        assert_eq!(s, JobStateType::Undefined);
    }

    #[test]
    fn execution_states_are_v16_integers() {
        assert_eq!(serde_json::to_string(&ExecutionStateType::Running).unwrap(), "6");
        assert_eq!(serde_json::to_string(&ExecutionStateType::Publishing).unwrap(), "7");
        assert_eq!(serde_json::to_string(&ExecutionStateType::BidRejected).unwrap(), "8");
        assert_eq!(serde_json::to_string(&ExecutionStateType::Cancelled).unwrap(), "11");
        assert_eq!(serde_json::to_string(&ExecutionDesiredStateType::Stopped).unwrap(), "2");
        assert!(serde_json::from_str::<ExecutionStateType>("12").is_err());
    }

    #[test]
    fn node_type_rejects_unknown_values() {
        assert!(serde_json::from_str::<NodeType>("\"Undefined\"").is_err());
        assert_eq!(serde_json::from_str::<NodeType>("\"compute\"").unwrap(), NodeType::Compute);
        assert_eq!(serde_json::to_string(&NodeMembership::Approved).unwrap(), "\"APPROVED\"");
        assert_eq!(serde_json::to_string(&NetworkType::Http).unwrap(), "\"HTTP\"");
    }
}
