//! dag-pb and UnixFS protobuf encoding, written by hand.
//!
//! Both formats are tiny and fixed (`dag-pb.md` and `unixfs.md` in ipfs/specs), and owning the
//! code lets the importer hash a leaf as `prefix ‖ chunk ‖ suffix` without copying the chunk,
//! and lets the decoder borrow from the block instead of allocating.
//!
//! ```text
//! PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }   // Links serialised first
//! PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! Data   { required Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
//!          repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
//!          optional uint32 mode = 7; optional UnixTime mtime = 8; }
//! ```
//!
//! The encoders reproduce go-merkledag/go-unixfs byte for byte (that is what makes CIDs equal to
//! Kubo's): file links carry an empty `Name`, every link carries `Tsize`, an internal file
//! node carries `filesize` and one `blocksizes` entry per child, and no `Data` bytes.
//!
//! The decoders take untrusted bytes: every length is checked against the remaining input
//! before use, nothing is allocated from a length field, unknown wire types are refused, and
//! errors are `&'static str` reasons the caller wraps with the block's CID.

use cid::Cid;

/// Writes `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encoded length of `v` as a varint.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Outcome of reading a varint from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Varint {
    /// The value and how many bytes it took.
    Value(u64, usize),
    /// The buffer ends inside the varint.
    Incomplete,
    /// More than 10 bytes, or a value above `u64::MAX`.
    Overflow,
}

/// Reads an unsigned LEB128 varint from the front of `buf`.
pub(crate) fn read_varint(buf: &[u8]) -> Varint {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Varint::Overflow;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value(value, i + 1);
        }
    }
    if buf.len() >= 10 { Varint::Overflow } else { Varint::Incomplete }
}

/// One protobuf field as read from untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// A bounded protobuf field reader over a borrowed buffer.
pub(crate) struct PbReader<'a> {
    buf: &'a [u8],
}

impl<'a> PbReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        match read_varint(self.buf) {
            Varint::Value(v, n) => {
                self.buf = &self.buf[n..];
                Ok(v)
            }
            Varint::Incomplete => Err("truncated varint"),
            Varint::Overflow => Err("varint overflows 64 bits"),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("length exceeds the remaining bytes");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `(field number, value)`, or `None` at the end of the buffer.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>, &'static str> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0");
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "length does not fit in memory")?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err("unsupported protobuf wire type (group or reserved)"),
        };
        Ok(Some((number, field)))
    }
}

// ---------------------------------------------------------------------------------------------
// dag-pb
// ---------------------------------------------------------------------------------------------

/// A decoded dag-pb link, borrowing from the block.
#[derive(Debug, Clone)]
pub(crate) struct PbLink<'a> {
    pub(crate) cid: Cid,
    pub(crate) name: Option<&'a [u8]>,
    pub(crate) tsize: Option<u64>,
}

/// A decoded dag-pb node, borrowing from the block.
#[derive(Debug, Clone)]
pub(crate) struct PbNode<'a> {
    pub(crate) links: Vec<PbLink<'a>>,
    pub(crate) data: Option<&'a [u8]>,
}

/// Parses the bytes of a CID that must span exactly `bytes`.
pub(crate) fn cid_from_exact_bytes(bytes: &[u8]) -> Result<Cid, &'static str> {
    let mut rest = bytes;
    let cid = Cid::read_bytes(&mut rest).map_err(|_| "invalid CID")?;
    if !rest.is_empty() {
        return Err("trailing bytes after CID");
    }
    Ok(cid)
}

/// Decodes a dag-pb block strictly enough for safety: only fields 1 and 2 at the node level,
/// 1–3 in links, each link has a hash, no field repeats where the schema says optional.
pub(crate) fn decode_dag_pb(block: &[u8]) -> Result<PbNode<'_>, &'static str> {
    let mut reader = PbReader::new(block);
    let mut links = Vec::new();
    let mut data = None;
    while let Some((number, field)) = reader.next_field()? {
        match (number, field) {
            (1, Field::Bytes(bytes)) => {
                if data.replace(bytes).is_some() {
                    return Err("duplicate Data field");
                }
            }
            (2, Field::Bytes(bytes)) => links.push(decode_link(bytes)?),
            (1 | 2, _) => return Err("wrong wire type for a dag-pb field"),
            _ => return Err("unknown dag-pb field"),
        }
    }
    Ok(PbNode { links, data })
}

fn decode_link(bytes: &[u8]) -> Result<PbLink<'_>, &'static str> {
    let mut reader = PbReader::new(bytes);
    let (mut cid, mut name, mut tsize) = (None, None, None);
    while let Some((number, field)) = reader.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) if cid.is_none() => cid = Some(cid_from_exact_bytes(b)?),
            (2, Field::Bytes(b)) if name.is_none() => name = Some(b),
            (3, Field::Varint(v)) if tsize.is_none() => tsize = Some(v),
            (1..=3, _) => return Err("duplicate or mistyped dag-pb link field"),
            _ => return Err("unknown dag-pb link field"),
        }
    }
    let cid = cid.ok_or("dag-pb link without a hash")?;
    Ok(PbLink { cid, name, tsize })
}

/// Appends one encoded `PBLink` (field 2 of the node) to `out`.
fn put_link(out: &mut Vec<u8>, cid: &[u8], name: &[u8], tsize: u64) {
    let inner = 1 + varint_len(cid.len() as u64) + cid.len() // Hash
        + 1 + varint_len(name.len() as u64) + name.len()     // Name (always present, as Go does)
        + 1 + varint_len(tsize); // Tsize
    out.push(0x12);
    put_varint(out, inner as u64);
    out.push(0x0a);
    put_varint(out, cid.len() as u64);
    out.extend_from_slice(cid);
    out.push(0x12);
    put_varint(out, name.len() as u64);
    out.extend_from_slice(name);
    out.push(0x18);
    put_varint(out, tsize);
}

/// Appends the node-level `Data` field (field 1) holding `unixfs`.
fn put_data(out: &mut Vec<u8>, unixfs: &[u8]) {
    out.push(0x0a);
    put_varint(out, unixfs.len() as u64);
    out.extend_from_slice(unixfs);
}

// ---------------------------------------------------------------------------------------------
// UnixFS
// ---------------------------------------------------------------------------------------------

/// UnixFS `DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Raw,
    Directory,
    File,
    Metadata,
    Symlink,
    HamtShard,
}

/// A decoded UnixFS `Data` message, borrowing from the block. `blocksizes` are counted, not
/// collected: readers verify sizes as they go instead.
#[derive(Debug, Clone)]
pub(crate) struct UnixFs<'a> {
    pub(crate) kind: DataType,
    pub(crate) data: Option<&'a [u8]>,
    pub(crate) filesize: Option<u64>,
    pub(crate) blocksizes: usize,
    pub(crate) hash_type: Option<u64>,
    pub(crate) fanout: Option<u64>,
}

/// Decodes a UnixFS `Data` message. Unknown fields with valid wire types are skipped (UnixFS
/// is proto2 and grows optional fields, like `mode` and `mtime`).
pub(crate) fn decode_unixfs(bytes: &[u8]) -> Result<UnixFs<'_>, &'static str> {
    let mut reader = PbReader::new(bytes);
    let mut out = UnixFs {
        kind: DataType::Raw,
        data: None,
        filesize: None,
        blocksizes: 0,
        hash_type: None,
        fanout: None,
    };
    let mut kind = None;
    while let Some((number, field)) = reader.next_field()? {
        match (number, field) {
            (1, Field::Varint(v)) => {
                kind = Some(match v {
                    0 => DataType::Raw,
                    1 => DataType::Directory,
                    2 => DataType::File,
                    3 => DataType::Metadata,
                    4 => DataType::Symlink,
                    5 => DataType::HamtShard,
                    _ => return Err("unknown UnixFS type"),
                })
            }
            (2, Field::Bytes(b)) => out.data = Some(b),
            (3, Field::Varint(v)) => out.filesize = Some(v),
            (4, Field::Varint(_)) => out.blocksizes += 1,
            (4, Field::Bytes(packed)) => {
                // Packed encoding: count the varints, checking they are well-formed.
                let mut rest = packed;
                while !rest.is_empty() {
                    match read_varint(rest) {
                        Varint::Value(_, n) => rest = &rest[n..],
                        _ => return Err("malformed packed blocksizes"),
                    }
                    out.blocksizes += 1;
                }
            }
            (5, Field::Varint(v)) => out.hash_type = Some(v),
            (6, Field::Varint(v)) => out.fanout = Some(v),
            (1..=6, _) => return Err("wrong wire type for a UnixFS field"),
            _ => {} // mode, mtime and future fields
        }
    }
    out.kind = kind.ok_or("UnixFS data without a type")?;
    Ok(out)
}

/// The framing around a file leaf's bytes in a dag-pb leaf:
/// `PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: len}}` is `prefix ‖ chunk ‖ suffix`.
/// Returned as fixed buffers so hashing a leaf never copies the chunk.
pub(crate) struct LeafFraming {
    prefix: [u8; 32],
    prefix_len: usize,
    suffix: [u8; 11],
    suffix_len: usize,
}

impl LeafFraming {
    pub(crate) fn new(chunk_len: usize) -> Self {
        let n = chunk_len as u64;
        let unixfs_len = 2 + 1 + varint_len(n) + chunk_len + 1 + varint_len(n);
        let mut prefix = Vec::with_capacity(32);
        prefix.push(0x0a);
        put_varint(&mut prefix, unixfs_len as u64);
        prefix.extend_from_slice(&[0x08, 0x02, 0x12]);
        put_varint(&mut prefix, n);
        let mut suffix = Vec::with_capacity(11);
        suffix.push(0x18);
        put_varint(&mut suffix, n);
        let mut out = Self {
            prefix: [0; 32],
            prefix_len: prefix.len(),
            suffix: [0; 11],
            suffix_len: suffix.len(),
        };
        out.prefix[..prefix.len()].copy_from_slice(&prefix);
        out.suffix[..suffix.len()].copy_from_slice(&suffix);
        out
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len]
    }

    pub(crate) fn suffix(&self) -> &[u8] {
        &self.suffix[..self.suffix_len]
    }
}

/// The dag-pb block of an empty file with dag-pb leaves: `UnixFS{Type: File, filesize: 0}`.
pub(crate) const EMPTY_FILE_BLOCK: [u8; 6] = [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00];

/// Encodes an internal file node: `(cid bytes, tsize, content size)` per child.
pub(crate) fn encode_file_node<'a>(
    children: impl Iterator<Item = (&'a [u8], u64, u64)> + Clone,
) -> Vec<u8> {
    let total: u64 = children.clone().map(|(_, _, size)| size).sum();
    let mut unixfs = vec![0x08, 0x02, 0x18];
    put_varint(&mut unixfs, total);
    for (_, _, size) in children.clone() {
        unixfs.push(0x20);
        put_varint(&mut unixfs, size);
    }
    let mut out = Vec::with_capacity(unixfs.len() + 64 * 8);
    for (cid, tsize, _) in children {
        put_link(&mut out, cid, b"", tsize);
    }
    put_data(&mut out, &unixfs);
    out
}

/// Encodes a basic (unsharded) directory. `entries` must already be sorted by name bytes.
pub(crate) fn encode_directory<'a>(
    entries: impl Iterator<Item = (&'a [u8], &'a [u8], u64)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, cid, tsize) in entries {
        put_link(&mut out, cid, name, tsize);
    }
    put_data(&mut out, &[0x08, 0x01]);
    out
}

/// Encodes a symlink node: `UnixFS{Type: Symlink, Data: target}` (no filesize, as go-unixfs).
pub(crate) fn encode_symlink(target: &[u8]) -> Vec<u8> {
    let mut unixfs = vec![0x08, 0x04, 0x12];
    put_varint(&mut unixfs, target.len() as u64);
    unixfs.extend_from_slice(target);
    let mut out = Vec::with_capacity(unixfs.len() + 4);
    put_data(&mut out, &unixfs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_bounds() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(read_varint(&buf), Varint::Value(v, buf.len()));
            assert_eq!(read_varint(&buf[..buf.len() - 1]), Varint::Incomplete);
        }
        assert_eq!(read_varint(&[0xff; 10]), Varint::Overflow);
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Varint::Overflow
        );
        assert_eq!(read_varint(&[0x80; 4]), Varint::Incomplete);
    }

    #[test]
    fn leaf_framing_matches_a_full_encoding() {
        let data = b"hello world";
        let framing = LeafFraming::new(data.len());
        let mut block = framing.prefix().to_vec();
        block.extend_from_slice(data);
        block.extend_from_slice(framing.suffix());
        let node = decode_dag_pb(&block).unwrap();
        assert!(node.links.is_empty());
        let fs = decode_unixfs(node.data.unwrap()).unwrap();
        assert_eq!(fs.kind, DataType::File);
        assert_eq!(fs.data, Some(&data[..]));
        assert_eq!(fs.filesize, Some(11));
    }

    #[test]
    fn decoder_refuses_garbage_without_panicking() {
        let cases: &[&[u8]] = &[
            &[0x0a, 0x05, 0x00],       // length past the end
            &[0x12, 0x02, 0x18, 0x01], // link without a hash
            &[0x1a, 0x00],             // unknown node field 3
            &[0x0b],                   // group wire type
            &[0x00],                   // field 0
            &[0x0a, 0x00, 0x0a, 0x00], // duplicate data
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ];
        for case in cases {
            assert!(decode_dag_pb(case).is_err(), "{case:?}");
        }
        assert!(decode_unixfs(&[0x08, 0x09]).is_err());
        assert!(decode_unixfs(&[0x12, 0x00]).is_err(), "type is required");
    }
}
