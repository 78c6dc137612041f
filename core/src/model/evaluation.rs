//! Evaluations: the record of "something changed, re-plan this job" (Bacalhau
//! `models.Evaluation`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::states::JobType;
use super::time::WallTime;

/// A request to re-plan one job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Evaluation {
    /// A bare UUID (as Bacalhau's orchestrator endpoint uses).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The job's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The job to plan.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// Why (`job-register`, `exec-failure`, ...).
    #[serde(default)]
    pub triggered_by: EvalTrigger,
    /// The job's priority.
    #[serde(default)]
    pub priority: i64,
    /// The job's type (picks the scheduler).
    #[serde(rename = "Type", default)]
    pub job_type: JobType,
    /// `pending`, `complete`, ...
    #[serde(default)]
    pub status: EvalStatus,
    /// Human note.
    #[serde(default)]
    pub comment: String,
    /// Not before (delayed evaluations).
    #[serde(default)]
    pub wait_until: WallTime,
    /// Unix nanoseconds.
    #[serde(default)]
    pub create_time: i64,
    /// Unix nanoseconds.
    #[serde(default)]
    pub modify_time: i64,
}

macro_rules! lower_enum {
    ($(#[$m:meta])* $name:ident, $default:ident { $($v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $(
                #[doc = $s]
                $v
            ),*
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),* }
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
                Ok($name::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(&s))
                    .unwrap_or($name::$default))
            }
        }
    };
}

lower_enum!(
    /// Evaluation status.
    EvalStatus, Pending {
        Blocked = "blocked",
        Pending = "pending",
        Complete = "complete",
        Failed = "failed",
        Canceled = "canceled",
    }
);

lower_enum!(
    /// What caused an evaluation.
    EvalTrigger, JobRegister {
        JobRegister = "job-register",
        JobCancel = "job-cancel",
        JobRerun = "job-rerun",
        JobUpdate = "job-update",
        JobQueue = "job-queue",
        JobTimeout = "job-timeout",
        ExecFailure = "exec-failure",
        ExecUpdate = "exec-update",
        ExecTimeout = "exec-timeout",
        ExecLimit = "exec-limit",
        NodeJoin = "node-join",
        NodeLeave = "node-leave",
    }
);
