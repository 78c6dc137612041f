//! The job model: job files, label selectors, identifiers, quantities and times.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use gadus_core::model::ident::{self, IdKind, MAX_ID_LEN};
use gadus_core::model::resources::{MAX_CPU, parse_bytes, parse_cpu, parse_gpu};
use gadus_core::model::{
    Constraints, Job, LabelSelectorRequirement, Timestamp, codec, parse_selector,
};
use gadus_core::peer::check_offered_job;
use gadus_core::rng::DetRng;

use crate::text;

/// Any bytes as a job file (`gadus job run FILE`, `PUT /jobs`): JSON-or-YAML, JSON and YAML
/// decoding; every decoded job re-encodes (JSON and YAML) to itself, before and after
/// `normalize`; and a normalized job that `validate` accepts is also accepted by
/// `check_offered_job`, the compute node's check of an offered job (otherwise the
/// orchestrator would schedule a job no node will ever bid on).
pub fn job_spec(data: &[u8]) {
    for decoded in [Job::from_file_bytes(data), Job::from_json(data), Job::from_yaml(data)] {
        match decoded {
            Ok(job) => submitted(job),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

pub(crate) fn submitted(mut job: Job) {
    round_trip(&job);
    let _warnings = job.normalize(&mut DetRng::new(0));
    round_trip(&job);
    match job.validate() {
        Ok(()) => {
            let json = codec::to_json(&job);
            if let Err(e) = check_offered_job(&json) {
                panic!("validate accepts a job that check_offered_job refuses: {e}\n{json}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn round_trip(job: &Job) {
    let json = codec::to_json(job);
    let back = Job::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("our own JSON does not decode: {e}\n{json}"));
    assert_eq!(&back, job, "JSON round trip\n{json}");
    assert_eq!(codec::to_json(&back), json, "JSON encoding is stable");
    let yaml = codec::to_yaml(job);
    let back = Job::from_yaml(yaml.as_bytes())
        .unwrap_or_else(|e| panic!("our own YAML does not decode: {e}\n{yaml}"));
    assert_eq!(&back, job, "YAML round trip\n{yaml}");
}

/// Any text as a label selector (the API's `labels=`, the CLI's `--constraints`): every
/// parsed requirement passes `check` (the parser yields only what a job may hold), prints
/// back to a selector that parses to the same requirements, and survives the JSON form
/// job constraints travel in.
pub fn selector(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let reqs = match parse_selector(s) {
        Ok(reqs) => reqs,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for r in &reqs {
        if let Err(e) = r.check() {
            panic!("parse_selector produced a requirement check refuses: {r:?}: {e}");
        }
    }
    let printed = reqs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    match parse_selector(&printed) {
        Ok(again) => assert_eq!(again, reqs, "printed as {printed:?}"),
        Err(e) => panic!("printed selector {printed:?} does not parse: {e}"),
    }
    let json = codec::to_json(&reqs);
    let back: Vec<LabelSelectorRequirement> = codec::from_json(json.as_bytes(), usize::MAX)
        .unwrap_or_else(|e| panic!("requirements JSON does not decode: {e}\n{json}"));
    assert_eq!(back, reqs);
    let split = Constraints::split(&reqs);
    assert_eq!(split.hard.len() + split.soft.len(), reqs.len());
    let labels: BTreeMap<String, String> = reqs
        .iter()
        .map(|r| (r.key.clone(), r.values.first().cloned().unwrap_or_default()))
        .collect();
    let _ = split.admits(&labels);
    assert!(split.preference(&labels) <= split.soft.len());
}

/// Any text as an identifier: `check` accepts exactly the documented syntax, whatever the
/// kind; an accepted one is a single ordinary path component; a refusal never echoes more
/// than a short prefix of the input.
pub fn ident(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let b = s.as_bytes();
    let documented = !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    assert_eq!(ident::problem(s).is_none(), documented, "{s:?}");
    assert_eq!(ident::is_valid(s), documented);
    for kind in
        [IdKind::Job, IdKind::Namespace, IdKind::Execution, IdKind::Node, IdKind::Evaluation]
    {
        match ident::check(kind, s) {
            Ok(()) => assert!(documented),
            Err(e) => {
                assert!(!documented);
                assert_eq!(e.kind, kind);
                // 64 characters, each escaped to at most 10 (`\u{10ffff}`), quotes, ellipsis.
                assert!(e.shown.len() <= 64 * 10 + 8, "an error echoes {} bytes", e.shown.len());
                assert!(e.to_string().len() <= e.shown.len() + 128);
            }
        }
    }
    if documented {
        let parts: Vec<_> = Path::new(s).components().collect();
        assert_eq!(parts, [Component::Normal(s.as_ref())], "{s:?} is one plain path component");
        assert!(!s.starts_with('-') && !s.contains('%'));
    }
}

/// Any text as a resource quantity (`CPU: 500m`, `Memory: 1.5GiB`, `GPU: 1`) and as an
/// RFC 3339 time: values are finite, in range, and their plain rendering parses back to them.
pub fn quantities(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match parse_cpu(s) {
        Ok(cpu) => {
            assert!(cpu.is_finite() && (0.0..=MAX_CPU).contains(&cpu), "cpu {cpu}");
            let shown = cpu.to_string();
            if shown.len() <= 64 {
                assert_eq!(parse_cpu(&shown), Ok(cpu), "{shown}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match parse_bytes(s) {
        // The value came from an f64, so its decimal form is exact.
        Ok(n) => assert_eq!(parse_bytes(&n.to_string()), Ok(n)),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(n) = parse_gpu(s) {
        assert_eq!(parse_gpu(&n.to_string()), Ok(n));
    }
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        let shown = t.to_rfc3339();
        assert_eq!(Timestamp::parse_rfc3339(&shown), Some(t), "{s:?} -> {shown:?}");
    }
}
