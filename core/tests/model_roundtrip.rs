//! Property: any job survives encode → decode unchanged, through JSON and through YAML.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::collections::BTreeMap;

use gadus_core::model::*;
use proptest::prelude::*;
use serde_json::Value;

fn text() -> impl Strategy<Value = String> {
    // Printable text including YAML's troublemakers (`yes`, `null`, `: `, `#`, quotes, digits).
    prop_oneof![
        "[a-zA-Z0-9_./ -]{0,12}",
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("1e3".to_string()),
        Just("- x: #y".to_string()),
        Just("'\"\\\n\t".to_string()),
        "\\PC{0,8}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_]{0,8}"
}

fn json_value() -> impl Strategy<Value = Value> {
    // No floats: JSON float text need not round-trip bit-exactly; integers and strings must.
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn spec() -> impl Strategy<Value = SpecConfig> {
    (text(), prop::collection::btree_map(key(), json_value(), 0..3))
        .prop_map(|(t, p)| SpecConfig { spec_type: t, params: p.into_iter().collect() })
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), text(), 0..3)
}

fn selector() -> impl Strategy<Value = LabelSelectorRequirement> {
    let op = prop_oneof![
        Just(Operator::Equals),
        Just(Operator::DoubleEquals),
        Just(Operator::NotEquals),
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
        Just(Operator::GreaterThan),
        Just(Operator::LessThan),
    ];
    (key(), op, prop::collection::vec(text(), 0..3))
        .prop_map(|(k, o, v)| LabelSelectorRequirement::new(k, o, v))
}

fn valid_selector() -> impl Strategy<Value = LabelSelectorRequirement> {
    let value = "[a-z0-9][a-z0-9._-]{0,6}";
    prop_oneof![
        (key(), value).prop_map(|(k, v)| LabelSelectorRequirement::new(
            k,
            Operator::Equals,
            vec![v]
        )),
        (key(), value).prop_map(|(k, v)| LabelSelectorRequirement::new(
            k,
            Operator::NotEquals,
            vec![v]
        )),
        (key(), prop::collection::vec(value, 1..3))
            .prop_map(|(k, v)| LabelSelectorRequirement::new(k, Operator::In, v)),
        (key(), prop::collection::vec(value, 1..3))
            .prop_map(|(k, v)| LabelSelectorRequirement::new(k, Operator::NotIn, v)),
        key().prop_map(|k| LabelSelectorRequirement::new(k, Operator::Exists, vec![])),
        key().prop_map(|k| LabelSelectorRequirement::new(k, Operator::DoesNotExist, vec![])),
        (key(), any::<i32>()).prop_map(|(k, n)| {
            LabelSelectorRequirement::new(k, Operator::GreaterThan, vec![n.to_string()])
        }),
        (key(), any::<i32>()).prop_map(|(k, n)| {
            LabelSelectorRequirement::new(k, Operator::LessThan, vec![n.to_string()])
        }),
    ]
}

fn task() -> impl Strategy<Value = Task> {
    let inputs = prop::collection::vec(
        (prop::option::of(spec()), text(), text())
            .prop_map(|(source, alias, target)| InputSource { source, alias, target }),
        0..3,
    );
    let results = prop::collection::vec(
        (text(), text()).prop_map(|(name, path)| ResultPath { name, path }),
        0..3,
    );
    let resources = prop::option::of(
        (text(), text(), text(), text()).prop_map(|(cpu, memory, disk, gpu)| ResourcesConfig {
            cpu,
            memory,
            disk,
            gpu,
        }),
    );
    let network = prop::option::of(
        (
            prop::sample::select(NetworkType::ALL.to_vec()),
            prop::collection::vec(text(), 0..2),
            prop::collection::vec(
                (key(), any::<i64>(), any::<i64>(), text()).prop_map(|(name, s, t, h)| Port {
                    name,
                    r#static: s,
                    target: t,
                    host_network: h,
                }),
                0..2,
            ),
        )
            .prop_map(|(network_type, domains, ports)| NetworkConfig {
                network_type,
                domains,
                ports,
            }),
    );
    let timeouts =
        prop::option::of((any::<i64>(), any::<i64>(), any::<i64>()).prop_map(|(e, q, t)| {
            TimeoutConfig { execution_timeout: e, queue_timeout: q, total_timeout: t }
        }));
    (
        text(),
        prop::option::of(spec()),
        prop::option::of(spec()),
        string_map(),
        string_map(),
        inputs,
        results,
        resources,
        network,
        timeouts,
    )
        .prop_map(
            |(
                name,
                engine,
                publisher,
                env,
                meta,
                input_sources,
                result_paths,
                resources,
                network,
                timeouts,
            )| {
                Task {
                    name,
                    engine,
                    publisher,
                    env,
                    meta,
                    input_sources,
                    result_paths,
                    resources,
                    network,
                    timeouts,
                }
            },
        )
}

fn job_type() -> impl Strategy<Value = JobType> {
    prop_oneof![
        Just(JobType::Batch),
        Just(JobType::Service),
        Just(JobType::Ops),
        Just(JobType::Daemon),
        Just(JobType::Missing),
        "[a-z]{1,6}x".prop_map(JobType::Unknown),
    ]
}

fn job() -> impl Strategy<Value = Job> {
    (
        (text(), text(), text(), job_type(), any::<i64>(), any::<i64>()),
        prop::collection::vec(selector(), 0..3),
        string_map(),
        string_map(),
        prop::collection::vec(task(), 0..2),
        (prop::sample::select(JobStateType::ALL.to_vec()), text(), string_map()),
        (any::<u64>(), any::<u64>(), any::<i64>(), any::<i64>()),
    )
        .prop_map(
            |(
                (id, name, namespace, job_type, priority, count),
                constraints,
                meta,
                labels,
                tasks,
                (st, msg, details),
                (version, revision, create_time, modify_time),
            )| {
                Job {
                    id,
                    name,
                    namespace,
                    job_type,
                    priority,
                    count,
                    constraints,
                    meta,
                    labels,
                    tasks,
                    state: State { state_type: st, message: msg, details },
                    version,
                    revision,
                    create_time,
                    modify_time,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_round_trip(job in job()) {
        let text = codec::to_json(&job);
        let back = Job::from_json(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, job);
    }

    #[test]
    fn yaml_round_trip(job in job()) {
        let text = codec::to_yaml(&job);
        let back = Job::from_yaml(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, job);
    }

    #[test]
    fn selector_query_form_round_trips(reqs in prop::collection::vec(valid_selector(), 1..4)) {
        let query = reqs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
        let back = parse_selector(&query).map_err(|e| TestCaseError::fail(format!("{e}: {query}")))?;
        // `>`/`<` print as the symbol and parse back to gt/lt.
        prop_assert_eq!(back, reqs);
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Job::from_json(&bytes);
        let _ = Job::from_yaml(&bytes);
        let _ = parse_selector(&String::from_utf8_lossy(&bytes));
    }
}
