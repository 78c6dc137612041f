//! The wire codec: any bytes decode to a value or a typed error (never a panic), and every
//! message survives encode → decode.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use gadus_core::protocol::*;
use proptest::prelude::*;

fn exec() -> impl Strategy<Value = ExecRef> {
    ("[a-z0-9-]{1,40}", "[a-z0-9-]{1,40}", any::<u64>())
        .prop_map(|(execution_id, job_id, attempt)| ExecRef { execution_id, job_id, attempt })
}

fn clock() -> impl Strategy<Value = NodeClock> {
    (any::<u64>(), any::<u64>()).prop_map(|(incarnation, seq)| NodeClock { incarnation, seq })
}

fn res() -> impl Strategy<Value = WireResources> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(cpu_milli, memory, disk, gpu)| WireResources { cpu_milli, memory, disk, gpu })
}

fn update() -> impl Strategy<Value = ExecUpdate> {
    prop_oneof![
        Just(ExecUpdate::Preparing),
        Just(ExecUpdate::Running),
        Just(ExecUpdate::Publishing),
        (".*", any::<i64>(), ".*").prop_map(|(stdout, exit_code, published_json)| {
            ExecUpdate::Completed {
                output: WireRunOutput { stdout, exit_code, ..Default::default() },
                published_json,
            }
        }),
        ".*".prop_map(|message| ExecUpdate::Failed {
            failure: ExecFailure { kind: FailureKind::OutOfFuel, message },
            output: None,
        }),
        ".*".prop_map(|reason| ExecUpdate::Cancelled { reason }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (exec(), ".*", any::<(u32, u32)>(), any::<bool>()).prop_map(
            |(exec, job_json, partition, needs_approval)| {
                Message::AskForBid { exec, job_json, partition, needs_approval }
            }
        ),
        exec().prop_map(|exec| Message::BidAccepted { exec }),
        (exec(), ".*").prop_map(|(exec, reason)| Message::CancelExecution { exec, reason }),
        (exec(), any::<bool>(), ".*", any::<bool>(), clock()).prop_map(
            |(exec, accepted, reason, retryable, clock)| {
                Message::BidResult { exec, accepted, reason, retryable, clock }
            }
        ),
        (exec(), update(), clock()).prop_map(|(exec, update, clock)| Message::ExecutionUpdate {
            exec,
            update,
            clock
        }),
        (
            res(),
            res(),
            any::<u32>(),
            prop::collection::vec((exec(), Just(ComputePhase::Running)), 0..4),
            clock()
        )
            .prop_map(|(available, queued, running, executions, clock)| {
                Message::Heartbeat {
                    heartbeat: Heartbeat { available, queued, running, executions },
                    clock,
                }
            }),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(m in message(), from in ".{0,20}", to in ".{0,20}") {
        let env = Envelope { version: PROTOCOL_VERSION, from, to, message: m };
        let bytes = encode_frame(&env).unwrap();
        prop_assert_eq!(decode_frame(&bytes).unwrap(), env);
    }

    #[test]
    fn any_bytes_decode_or_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
        let _ = decode_payload(&bytes);
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode_frame(&framed);
    }

    #[test]
    fn mutated_frames_never_panic(m in message(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let env = Envelope { version: PROTOCOL_VERSION, from: "a".into(), to: "b".into(), message: m };
        let mut bytes = encode_frame(&env).unwrap();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[4 + i % (n - 4)] ^= b;
        }
        let _ = decode_frame(&bytes);
    }
}
