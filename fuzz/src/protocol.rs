//! The cluster wire: frames, the libp2p codec, and the checks every peer message passes.

use bytes::Bytes;
use gadus_core::model::codec;
use gadus_core::model::ident;
use gadus_core::model::validate::MAX_COUNT;
use gadus_core::peer::{MAX_PEER_TEXT, check_message, check_offered_job};
use gadus_core::protocol::{
    Envelope, ExecUpdate, MAX_FRAME_BYTES, Message, PROTOCOL_VERSION, WireError, decode_frame,
    decode_job, decode_payload, decode_published, encode_frame, frame_len,
};
use gadus_io::transport::p2p::{Frame, FrameCodec};

use crate::text;

/// Any bytes as a whole frame (`decode_frame`) and as a payload (`decode_payload`): the two
/// agree, the length prefix alone decides oversized and mismatched frames, and every decoded
/// envelope re-encodes to a frame that is no longer than its input and decodes to the same
/// envelope. Decoded messages then go through the peer checks (see [`peer_message`]).
pub fn protocol_frame(data: &[u8]) {
    let whole = decode_frame(data);
    match data.split_first_chunk::<4>() {
        None => assert_eq!(whole, Err(WireError::Truncated)),
        Some((prefix, payload)) => match frame_len(*prefix) {
            // Refused from the prefix alone, before the payload is looked at.
            Err(e) => assert_eq!(whole, Err(e)),
            Ok(n) if n != payload.len() => assert_eq!(
                whole,
                Err(WireError::LengthMismatch { declared: n, actual: payload.len() })
            ),
            Ok(_) => assert_eq!(whole, decode_payload(payload)),
        },
    }
    // The same bytes as a payload, and framed with the right prefix (what `encode_frame`
    // would send): both paths must give the same answer.
    let as_payload = decode_payload(data);
    if data.len() <= MAX_FRAME_BYTES {
        let mut framed = u32::try_from(data.len()).expect("<= 4 MiB").to_be_bytes().to_vec();
        framed.extend_from_slice(data);
        assert_eq!(decode_frame(&framed), as_payload);
    } else {
        assert_eq!(as_payload, Err(WireError::TooLarge(data.len())));
    }
    if let Ok(env) = &whole {
        round_trip(env, data.len() - 4);
        check_peer(env);
    }
    if let Ok(env) = &as_payload {
        round_trip(env, data.len());
        check_peer(env);
    }
}

fn round_trip(env: &Envelope, payload_len: usize) {
    assert_eq!(env.version, PROTOCOL_VERSION, "decode_payload refuses other versions");
    let frame = encode_frame(env).expect("a decoded envelope re-encodes");
    // bincode's varints are minimal when written; what was read can only have been as long.
    assert!(
        frame.len() - 4 <= payload_len,
        "re-encoding grew: {} > {payload_len}",
        frame.len() - 4
    );
    assert_eq!(frame_len(frame[..4].try_into().expect("4 bytes")), Ok(frame.len() - 4));
    assert_eq!(decode_frame(&frame).as_ref(), Ok(env), "encode_frame/decode_frame round trip");
}

/// The p2p request codec against the core's decoder: `FrameCodec::decode` with the full limit
/// is `decode_frame`; with a smaller limit it refuses exactly the frames that claim more;
/// `read_frame` reads exactly the declared frame from a stream (or fails without reading a
/// payload over the limit).
pub fn p2p_frame(data: &[u8]) {
    let frame = Frame(Bytes::copy_from_slice(data));
    let reference = decode_frame(data);
    // `new` caps the limit at MAX_FRAME_BYTES.
    assert_eq!(FrameCodec::new(usize::MAX).decode(&frame), reference);
    let declared = data.first_chunk::<4>().map(|p| u32::from_be_bytes(*p) as usize);
    let payload_len = data.len().saturating_sub(4);
    for limit in [0, 1, payload_len.saturating_sub(1), payload_len, 64 * 1024] {
        let codec = FrameCodec::new(limit);
        let decoded = codec.decode(&frame);
        match declared {
            None => assert_eq!(decoded, Err(WireError::Truncated)),
            Some(d) if d > limit => assert_eq!(decoded, Err(WireError::TooLarge(d))),
            Some(_) => assert_eq!(decoded, reference),
        }
        let mut stream = futures::io::Cursor::new(data);
        let read = futures::executor::block_on(codec.read_frame(&mut stream));
        match (declared, read) {
            (None, Ok(f)) => panic!("read a frame from {} bytes: {f:?}", data.len()),
            (None, Err(_)) => {}
            (Some(d), Ok(f)) => {
                assert!(d <= limit, "read a {d}-byte frame past the {limit}-byte limit");
                assert_eq!(&f.0[..], &data[..4 + d], "read_frame returns exactly one frame");
                assert_eq!(codec.decode(&f), decode_frame(&data[..4 + d]));
            }
            (Some(d), Err(e)) => assert!(
                d > limit || data.len() < 4 + d,
                "read_frame failed on a complete {d}-byte frame under the {limit}-byte limit: {e}"
            ),
        }
    }
}

/// Any bytes as a frame payload from a peer; what decodes goes through `check_message`, and
/// a message it accepts really satisfies every rule the module documents.
pub fn peer_message(data: &[u8]) {
    if let Ok(env) = decode_payload(data) {
        check_peer(&env);
    }
}

fn check_peer(env: &Envelope) {
    // As the driver calls it (the authenticated sender), and from a fixed valid node ID (the
    // forged-NodeInfo path).
    for from in [env.from.as_str(), "n-1"] {
        match check_message(from, &env.message) {
            Ok(()) => assert_accepted(from, &env.message),
            Err(e) => {
                let _ = (e.kind(), e.to_string());
            }
        }
    }
    if let Message::AskForBid { job_json, .. } = &env.message {
        offered_job_text(job_json);
    }
}

/// What `check_message` promises about a message it let through.
fn assert_accepted(from: &str, m: &Message) {
    let text_ok = |s: &str| s.len() <= MAX_PEER_TEXT;
    assert!(ident::is_valid(from), "accepted sender {from:?}");
    if let Some(exec) = m.exec() {
        assert!(ident::is_valid(&exec.execution_id), "accepted execution ID {exec:?}");
        assert!(ident::is_valid(&exec.job_id), "accepted job ID {exec:?}");
    }
    match m {
        Message::AskForBid { partition: (index, count), .. } => {
            assert!(*count >= 1 && index < count && i64::from(*count) <= MAX_COUNT);
        }
        Message::BidRejected { reason, .. }
        | Message::CancelExecution { reason, .. }
        | Message::BidResult { reason, .. } => assert!(text_ok(reason)),
        Message::ExecutionUpdate { update, .. } => match update {
            ExecUpdate::Completed { published_json, .. } => {
                assert!(decode_published(published_json).is_ok());
            }
            ExecUpdate::Failed { failure, .. } => assert!(text_ok(&failure.message)),
            ExecUpdate::Cancelled { reason } => assert!(text_ok(reason)),
            ExecUpdate::Preparing | ExecUpdate::Running | ExecUpdate::Publishing => {}
        },
        Message::NodeInfo { advert, .. } => {
            assert_eq!(advert.node_id, from, "a node describes only itself");
            assert!(text_ok(&advert.version) && text_ok(&advert.address));
        }
        Message::Heartbeat { heartbeat, .. } => {
            for (exec, _) in &heartbeat.executions {
                assert!(ident::is_valid(&exec.execution_id) && ident::is_valid(&exec.job_id));
            }
        }
        Message::BidAccepted { .. } | Message::UpdateAck { .. } | Message::Goodbye { .. } => {}
    }
}

/// Any text as the job JSON of an `AskForBid` (and as a published result of `Completed`).
pub fn offered_job(data: &[u8]) {
    if let Some(s) = text(data) {
        offered_job_text(s);
    }
}

pub(crate) fn offered_job_text(s: &str) {
    let decoded = decode_job(s);
    match check_offered_job(s) {
        Ok((job, resources)) => {
            assert_eq!(
                decoded.as_ref().ok(),
                Some(&job),
                "check_offered_job decodes as decode_job"
            );
            assert!(job.validate().is_ok(), "an accepted job validates");
            assert!(resources.cpu.is_finite() && resources.cpu >= 0.0, "{resources:?}");
            // The orchestrator stores what it offered and may offer it again, re-encoded.
            let again = codec::to_json(&job);
            let (job2, resources2) = check_offered_job(&again).unwrap_or_else(|e| {
                panic!("an accepted job, re-encoded, is refused: {e}\n{again}")
            });
            assert_eq!(job2, job);
            assert_eq!(resources2, resources);
        }
        Err(e) => {
            let _ = (e.kind(), e.to_string());
        }
    }
    if let Ok(Some(spec)) = decode_published(s) {
        let again = codec::to_json(&spec);
        assert_eq!(decode_published(&again).ok().flatten().as_ref(), Some(&spec));
    }
}
