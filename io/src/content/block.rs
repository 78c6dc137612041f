//! Block identity: building CIDs and verifying that bytes match the CID that names them.
//!
//! Only sha2-256 (what every UnixFS importer and trustless gateway uses) and identity (inline
//! CIDs) are verifiable here; a block under any other hash is refused rather than stored
//! unverified.

use cid::Cid;
use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

use super::MAX_BLOCK_SIZE;
use super::error::{Result, UntrustedError};

/// Multicodec `dag-pb`.
pub const DAG_PB: u64 = 0x70;
/// Multicodec `raw`.
pub const RAW: u64 = 0x55;
/// Multihash `sha2-256`.
pub const SHA2_256: u64 = 0x12;
/// Multihash `identity`: the "digest" is the data itself.
pub const IDENTITY: u64 = 0x00;

/// The CID version of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CidVersion {
    /// `Qm…` (base58, dag-pb only) — Kubo's default.
    V0,
    /// `baf…` (base32), as `ipfs add --cid-version=1`.
    V1,
}

/// Wraps a sha2-256 digest as a CID.
pub(crate) fn sha256_cid(version: CidVersion, codec: u64, digest: &[u8; 32]) -> Cid {
    let mh =
        Multihash::<64>::wrap(SHA2_256, digest).expect("a 32-byte digest fits a 64-byte multihash");
    match version {
        // CIDv0 exists only for dag-pb; the importer never asks for a raw v0 CID (options
        // validation refuses raw leaves with v0), so fall through to v1 for anything else.
        CidVersion::V0 if codec == DAG_PB => {
            Cid::new_v0(mh).expect("sha2-256 multihashes are valid CIDv0")
        }
        _ => Cid::new_v1(codec, mh),
    }
}

/// The sha2-256 digest of the concatenation of `parts`.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The CID of `data` under `codec`, hashed with sha2-256.
pub fn cid_of_block(version: CidVersion, codec: u64, data: &[u8]) -> Cid {
    sha256_cid(version, codec, &sha256_parts(&[data]))
}

/// Checks that `data` is the block `cid` names: within [`MAX_BLOCK_SIZE`] and hashing to the
/// CID's multihash. This is the one gate every byte from outside passes.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<()> {
    if data.len() > MAX_BLOCK_SIZE {
        return Err(UntrustedError::BlockTooLarge {
            size: data.len() as u64,
            max: MAX_BLOCK_SIZE as u64,
        }
        .into());
    }
    let mh = cid.hash();
    let ok = match mh.code() {
        SHA2_256 => mh.size() == 32 && sha256_parts(&[data]).as_slice() == mh.digest(),
        IDENTITY => mh.digest() == data,
        code => return Err(UntrustedError::UnsupportedHash { cid: *cid, code }.into()),
    };
    if ok { Ok(()) } else { Err(UntrustedError::HashMismatch(*cid).into()) }
}

/// The database key of a block: its multihash bytes. Keying by multihash (as Kubo does) makes a
/// block found under its CIDv0 also found under the equivalent CIDv1.
pub(crate) fn block_key(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_vectors() {
        let v1 = cid_of_block(CidVersion::V1, RAW, b"hello world");
        assert_eq!(v1.to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        verify_block(&v1, b"hello world").unwrap();
        assert!(verify_block(&v1, b"hello worle").is_err());
    }
}
