//! Job ownership: who submitted a job, and what everyone else sees of it.
//!
//! The owner is the subject of the token the job was submitted with, stamped into the job's
//! `Meta` under [`OWNER_META`] by the node (a value a client sends there is dropped, so
//! nobody can claim someone else's job). Whether a caller may act on a job is the access
//! policy's call (`input.job.owner`); what a reader sees is this module's: a job's
//! environment values are its owner's secrets and are redacted for every other reader,
//! including every reader of a job submitted without a token.

use std::sync::Arc;

use gadus_core::model::{Execution, Job};
use serde_json::Value;

/// The `Meta` key holding a job's owner.
pub const OWNER_META: &str = "gadus.io/owner";

/// What replaces a hidden value.
pub const REDACTED: &str = "<redacted>";

/// The job's owner (`""` when it was submitted without a token).
pub fn owner(job: &Job) -> &str {
    job.meta.get(OWNER_META).map_or("", String::as_str)
}

/// Records `caller` as the job's owner, or removes a client-supplied claim when there is no
/// caller.
pub fn stamp(job: &mut Job, caller: Option<&str>) {
    match caller {
        Some(c) if !c.is_empty() => {
            job.meta.insert(OWNER_META.into(), c.into());
        }
        _ => {
            job.meta.remove(OWNER_META);
        }
    }
}

fn has_secrets(job: &Job) -> bool {
    job.tasks.iter().any(|t| {
        !t.env.is_empty()
            || t.engine.as_ref().is_some_and(|e| {
                e.params
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("EnvironmentVariables") && !is_empty(v))
            })
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn redact(job: &mut Job) {
    for t in &mut job.tasks {
        for v in t.env.values_mut() {
            *v = REDACTED.into();
        }
        let Some(engine) = t.engine.as_mut() else { continue };
        for (k, v) in engine.params.iter_mut() {
            if !k.eq_ignore_ascii_case("EnvironmentVariables") {
                continue;
            }
            match v {
                // Docker: ["KEY=value", ...].
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if let Value::String(s) = item {
                            let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k);
                            *s = format!("{key}={REDACTED}");
                        }
                    }
                }
                // WASM: {"KEY": "value"}.
                Value::Object(m) => {
                    for v in m.values_mut() {
                        *v = Value::String(REDACTED.into());
                    }
                }
                other => *other = Value::String(REDACTED.into()),
            }
        }
    }
}

/// The job as `caller` may see it: itself for its owner (or when it holds no secrets), a copy
/// with its environment values redacted for anyone else.
pub fn view(job: &Arc<Job>, caller: Option<&str>) -> Arc<Job> {
    let o = owner(job);
    if (!o.is_empty() && caller == Some(o)) || !has_secrets(job) {
        return job.clone();
    }
    let mut copy = (**job).clone();
    redact(&mut copy);
    debug_assert!(
        !has_secrets(&copy) || copy.tasks.iter().all(|t| t.env.values().all(|v| v == REDACTED))
    );
    Arc::new(copy)
}

/// An execution of a job owned by `owner` as `caller` may see it: its embedded job redacted
/// like [`view`], and, for anyone but the owner of an owned job, no run output (it is the
/// job's log, which the policy keeps to the owner). Where the results were published stays
/// visible, as in Bacalhau's execution view: fetching a local archive is the policy's call
/// (`/results/`), and content published to IPFS is public by its address. An ownerless
/// job's output stays visible: nobody could be told apart to keep it.
pub fn view_execution(mut e: Execution, owner: &str, caller: Option<&str>) -> Execution {
    if let Some(job) = e.job.take() {
        let shown = view(&Arc::new(*job), caller);
        e.job = Some(Box::new(Arc::unwrap_or_clone(shown)));
    }
    if !owner.is_empty() && caller != Some(owner) {
        e.run_output = None;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_with_secrets(owner: Option<&str>) -> Arc<Job> {
        let mut j: Job = serde_json::from_value(json!({
            "ID": "j-1", "Type": "batch",
            "Meta": {"gadus.io/owner": "forged"},
            "Tasks": [{"Name": "main", "Env": {"TOKEN": "s3cret"},
                "Engine": {"Type": "docker", "Params": {"Image": "x", "EnvironmentVariables": ["API_KEY=abc", "FLAG"]}}}]
        }))
        .unwrap();
        stamp(&mut j, owner);
        Arc::new(j)
    }

    #[test]
    fn only_the_owner_sees_environment_values() {
        let j = job_with_secrets(Some("alice"));
        assert_eq!(owner(&j), "alice");
        assert_eq!(view(&j, Some("alice")).tasks[0].env["TOKEN"], "s3cret");
        for other in [None, Some("bob"), Some("")] {
            let v = view(&j, other);
            assert_eq!(v.tasks[0].env["TOKEN"], REDACTED);
            let params = &v.tasks[0].engine.as_ref().unwrap().params;
            assert_eq!(
                params["EnvironmentVariables"],
                json!(["API_KEY=<redacted>", "FLAG=<redacted>"])
            );
            assert_eq!(params["Image"], "x", "only secrets are hidden");
        }
    }

    #[test]
    fn a_claimed_owner_is_dropped_and_an_ownerless_job_hides_its_secrets_from_all() {
        let j = job_with_secrets(None);
        assert_eq!(owner(&j), "", "the client's own Meta claim must not stand");
        assert_eq!(view(&j, None).tasks[0].env["TOKEN"], REDACTED);
        assert_eq!(view(&j, Some("forged")).tasks[0].env["TOKEN"], REDACTED);
    }
}
