//! The fuzz targets of gadus: one `pub fn <target>(data: &[u8])` per decoder of untrusted
//! bytes. The libFuzzer binary (`src/bin/gadus-fuzz.rs`) feeds one of them, chosen by
//! `GADUS_FUZZ_TARGET`, and `tests/replay.rs` runs every file of `corpus/<target>/` and
//! `regressions/<target>/` through the same function without libFuzzer, so a crash once found
//! stays fixed.
//!
//! Every function must be deterministic, cheap (no network, no Docker) and assert real
//! properties: decoding never panics; what decodes re-encodes and decodes to the same value
//! where the API allows; outputs stay within the documented bounds; two entry points that
//! must agree do. A failed assertion is a bug in gadus (or, rarely, in the property: the
//! comment next to each assertion says why it must hold).
//!
//! | target | entry points |
//! |---|---|
//! | `protocol_frame` | `gadus_core::protocol::{decode_frame, decode_payload, encode_frame, frame_len}` |
//! | `p2p_frame` | `gadus_io::transport::p2p::FrameCodec::{decode, read_frame}` |
//! | `peer_message` | `decode_payload` then `gadus_core::peer::check_message` |
//! | `offered_job` | `gadus_core::peer::check_offered_job`, `protocol::{decode_job, decode_published}` |
//! | `car` | `gadus_io::content::{read_car, CarDecoder, encode_car_header}` |
//! | `unixfs` | dag-pb/UnixFS decoding (private `content::pb`) through `ContentStore::{stat, ls, resolve, cat, export_with, first_missing}` |
//! | `gateway_path` | `gadus_io::content::parse_content_path` |
//! | `tar_gz` | `gadus_io::archive::{safe_unpack_tar_gz, pack_tar_gz}` |
//! | `data_url` | `gadus_io::storage::inline::parse_data_url` |
//! | `job_spec` | `Job::{from_file_bytes, from_json, from_yaml}`, `normalize`, `validate` |
//! | `selector` | `gadus_core::model::parse_selector`, `Constraints` |
//! | `ident` | `gadus_core::model::ident::{check, problem}` |
//! | `quantities` | `model::resources::{parse_cpu, parse_bytes, parse_gpu}`, `Timestamp::parse_rfc3339` |
//! | `duration` | `gadus_node::config::parse_duration` |
//! | `node_config` | `gadus_node::config::NodeConfig::load` (a YAML file plus flags) |
//! | `api_body` | `gadus_node::api::decode_body` into the API's request body shapes |
//! | `api_query` | `serde_urlencoded`/`form_urlencoded` into the API's query shapes |
//! | `auth` | `gadus_node::auth::{jwt::{decode, verify}, keys::{public_key_from_base64, signed_digest}, jwt::Constraints}`, the default access policy on any request |

mod archive;
mod auth;
mod content;
mod files;
mod model;
mod node;
mod protocol;

pub use archive::{data_url, tar_gz};
pub use auth::auth;
pub use content::{car, gateway_path, unixfs};
pub use model::{ident, job_spec, quantities, selector};
pub use node::{api_body, api_query, duration, node_config};
pub use protocol::{offered_job, p2p_frame, peer_message, protocol_frame};

/// A fuzz target: its name (= `GADUS_FUZZ_TARGET` and its corpus folder) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the binary and the replay test (which checks this list against
/// `corpus/`).
pub const TARGETS: &[Target] = &[
    ("api_body", api_body),
    ("api_query", api_query),
    ("auth", auth),
    ("car", car),
    ("data_url", data_url),
    ("duration", duration),
    ("gateway_path", gateway_path),
    ("ident", ident),
    ("job_spec", job_spec),
    ("node_config", node_config),
    ("offered_job", offered_job),
    ("p2p_frame", p2p_frame),
    ("peer_message", peer_message),
    ("protocol_frame", protocol_frame),
    ("quantities", quantities),
    ("selector", selector),
    ("tar_gz", tar_gz),
    ("unixfs", unixfs),
];

/// The input as UTF-8 text, if it is (most text decoders take `&str`).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
