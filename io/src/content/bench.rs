//! The CID-only import benchmark behind `gadus bench cid`: UnixFS "only hash" throughput
//! against plain single-core sha2-256 over the same bytes (target: ≥ 90%).
//!
//! Both sides hash from memory on one thread, so the ratio isolates the importer's overhead
//! (chunk framing, leaf/node encoding, tree building; plus one copy per chunk on the `Read`
//! path). Each figure is the best of `rounds`, which filters out noise from other processes
//! on a shared machine.

use std::fmt;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::error::Result;
use super::import::{ImportOptions, hash_bytes, hash_reader};

/// Measured throughputs, in MiB/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CidThroughput {
    /// Bytes hashed per round.
    pub bytes: u64,
    /// Plain sha2-256 over the buffer.
    pub sha256: f64,
    /// [`hash_bytes`]: CID of an in-memory file (no chunk copy).
    pub cid_from_bytes: f64,
    /// [`hash_reader`]: CID of a file streamed through `Read` (one copy per chunk).
    pub cid_from_reader: f64,
}

impl CidThroughput {
    /// `cid_from_bytes / sha256`.
    pub fn bytes_ratio(&self) -> f64 {
        self.cid_from_bytes / self.sha256
    }

    /// `cid_from_reader / sha256`.
    pub fn reader_ratio(&self) -> f64 {
        self.cid_from_reader / self.sha256
    }
}

impl fmt::Display for CidThroughput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MiB: sha256 {:.0} MiB/s; CID only from memory {:.0} MiB/s ({:.1}%), via Read {:.0} MiB/s ({:.1}%)",
            self.bytes >> 20,
            self.sha256,
            self.cid_from_bytes,
            100.0 * self.bytes_ratio(),
            self.cid_from_reader,
            100.0 * self.reader_ratio()
        )
    }
}

/// Best-of-`rounds` MiB/s of `f` over `bytes`.
fn best(rounds: usize, bytes: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(bytes as f64 / (1 << 20) as f64 / best.max(1e-9))
}

/// `n` pseudo-random bytes (xorshift), the same for every call: leaves differ, so no block is
/// deduplicated, and contents do not affect hashing speed.
pub fn pseudo_random_bytes(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// Measures CID-only import of `bytes` pseudo-random bytes with `opts` against sha2-256.
pub fn measure_cid_throughput(
    bytes: usize,
    rounds: usize,
    opts: &ImportOptions,
) -> Result<CidThroughput> {
    let data = pseudo_random_bytes(bytes);
    let mut sink = 0u8;
    let sha256 = best(rounds, bytes, || {
        sink ^= Sha256::digest(&data)[0];
        Ok(())
    })?;
    let cid_from_bytes =
        best(rounds, bytes, || hash_bytes(&data, opts).map(|i| sink ^= i.cid.hash().digest()[0]))?;
    let cid_from_reader = best(rounds, bytes, || {
        hash_reader(&data[..], opts).map(|i| sink ^= i.cid.hash().digest()[0])
    })?;
    std::hint::black_box(sink);
    Ok(CidThroughput { bytes: bytes as u64, sha256, cid_from_bytes, cid_from_reader })
}
