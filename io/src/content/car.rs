//! CAR v1 ("content addressable archive"), written by hand: export of a DAG and verified,
//! all-or-nothing import.
//!
//! ```text
//! CAR     = varint(len(header)) header section*
//! header  = DAG-CBOR {"roots": [CID…], "version": 1}     (CIDs as tag 42 over 0x00 ‖ cid bytes)
//! section = varint(len(cid) + len(block)) cid block
//! ```
//!
//! [`CarDecoder`] is sans-IO: bytes are pushed in (from a `Read`, or from an HTTP body chunk by
//! chunk) and complete, verified blocks come out. It never buffers more than one section,
//! refuses a header above [`CarLimits::max_header`], a section above [`MAX_BLOCK_SIZE`] plus a
//! CID, varints over 10 bytes, indefinite-length or over-long CBOR, CARv2, and any block whose
//! bytes do not hash to its CID. The DAG-CBOR subset needed for the header is decoded here
//! too (a general CBOR crate would bring much more surface for the same three fields).

use std::collections::HashSet;
use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::Stream;

use super::MAX_BLOCK_SIZE;
use super::block::{DAG_PB, block_key, verify_block};
use super::error::{ContentError, LocalError, RequestError, Result, UntrustedError};
use super::pb::{Varint, cid_from_exact_bytes, decode_dag_pb, put_varint, read_varint};
use super::store::ContentStore;

/// A CID is at most: version + codec varints + hash code + length varints + 64-byte digest.
const MAX_CID_LEN: usize = 96;
/// The largest section accepted: a CID and a maximal block.
const MAX_SECTION: u64 = (MAX_BLOCK_SIZE + MAX_CID_LEN) as u64;
/// Depth limit when skipping unknown header values.
const MAX_CBOR_DEPTH: usize = 8;

fn car_error(reason: impl Into<String>) -> ContentError {
    UntrustedError::Car(reason.into()).into()
}

/// Limits applied while reading a CAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarLimits {
    /// Largest header in bytes.
    pub max_header: usize,
    /// Most roots in the header.
    pub max_roots: usize,
    /// Largest whole CAR in bytes.
    pub max_total_bytes: u64,
    /// Most blocks.
    pub max_blocks: u64,
}

impl Default for CarLimits {
    fn default() -> Self {
        Self {
            max_header: 64 * 1024,
            max_roots: 1024,
            max_total_bytes: u64::MAX,
            max_blocks: u64::MAX,
        }
    }
}

/// Options of [`ContentStore::import_car`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarImportOptions {
    /// Pin every root; the import then fails unless each root's DAG is complete in the store
    /// afterwards (as `ipfs dag import` does by default).
    pub pin_roots: bool,
    /// Reading limits.
    pub limits: CarLimits,
}

impl Default for CarImportOptions {
    fn default() -> Self {
        Self { pin_roots: true, limits: CarLimits::default() }
    }
}

/// What a CAR import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarImport {
    /// The header's roots.
    pub roots: Vec<Cid>,
    /// Blocks in the CAR.
    pub blocks: u64,
    /// Blocks newly added to the store (the others were already present).
    pub blocks_added: u64,
}

/// What a CAR export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarExport {
    /// Blocks written.
    pub blocks: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// Header (DAG-CBOR subset)
// ---------------------------------------------------------------------------------------------

fn cbor_head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    match v {
        0..=23 => out.push(m | v as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, v as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// The CARv1 header block for `roots` (DAG-CBOR: map keys sorted by length, "roots" first).
pub fn encode_car_header(roots: &[Cid]) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(16 + roots.len() * 40);
    cbor_head(&mut cbor, 5, 2);
    cbor_head(&mut cbor, 3, 5);
    cbor.extend_from_slice(b"roots");
    cbor_head(&mut cbor, 4, roots.len() as u64);
    for root in roots {
        let bytes = root.to_bytes();
        cbor_head(&mut cbor, 6, 42);
        cbor_head(&mut cbor, 2, bytes.len() as u64 + 1);
        cbor.push(0x00); // the identity multibase prefix DAG-CBOR requires on CIDs
        cbor.extend_from_slice(&bytes);
    }
    cbor_head(&mut cbor, 3, 7);
    cbor.extend_from_slice(b"version");
    cbor_head(&mut cbor, 0, 1);
    let mut out = Vec::with_capacity(cbor.len() + 4);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

struct Cbor<'a> {
    buf: &'a [u8],
}

impl<'a> Cbor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or_else(|| car_error("header truncated"))?;
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// `(major type, argument)`; indefinite lengths and reserved encodings are refused.
    fn head(&mut self) -> Result<(u8, u64)> {
        let first = self.take(1)?[0];
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => self.take(2)?.iter().fold(0, |a, &b| a << 8 | u64::from(b)),
            26 => self.take(4)?.iter().fold(0, |a, &b| a << 8 | u64::from(b)),
            27 => self.take(8)?.iter().fold(0, |a, &b| a << 8 | u64::from(b)),
            _ => return Err(car_error("indefinite-length or reserved CBOR in header")),
        };
        Ok((major, arg))
    }

    fn skip(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_CBOR_DEPTH {
            return Err(car_error("header nested too deeply"));
        }
        let (major, arg) = self.head()?;
        match major {
            0 | 1 | 7 => {}
            2 | 3 => {
                self.take(arg)?;
            }
            4 | 5 => {
                let items = if major == 5 { arg.saturating_mul(2) } else { arg };
                // Each item takes at least one byte: a count above what is left is a lie.
                if items > self.buf.len() as u64 {
                    return Err(car_error("header truncated"));
                }
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
            }
            _ => self.skip(depth + 1)?, // tag: skip the tagged item
        }
        Ok(())
    }
}

/// Decodes a CARv1 header's CBOR (without the length prefix) into its roots.
fn decode_car_header(bytes: &[u8], limits: &CarLimits) -> Result<Vec<Cid>> {
    let mut c = Cbor { buf: bytes };
    let (major, entries) = c.head()?;
    if major != 5 || entries > 16 {
        return Err(car_error("header is not a small CBOR map"));
    }
    let (mut version, mut roots) = (None, None);
    for _ in 0..entries {
        let (major, len) = c.head()?;
        if major != 3 || len > 64 {
            return Err(car_error("header key is not a short text string"));
        }
        match c.take(len)? {
            b"version" => match c.head()? {
                (0, v) => version = Some(v),
                _ => return Err(car_error("header version is not an unsigned integer")),
            },
            b"roots" => {
                let (major, n) = c.head()?;
                if major != 4 {
                    return Err(car_error("header roots is not an array"));
                }
                if n > limits.max_roots as u64 {
                    return Err(car_error(format!("more than {} roots", limits.max_roots)));
                }
                let mut list = Vec::new();
                for _ in 0..n {
                    if c.head()? != (6, 42) {
                        return Err(car_error("root is not a CID (CBOR tag 42)"));
                    }
                    let (major, len) = c.head()?;
                    if major != 2 || len > MAX_CID_LEN as u64 + 1 {
                        return Err(car_error("root CID is not a short byte string"));
                    }
                    let bytes = c.take(len)?;
                    let cid = match bytes.split_first() {
                        Some((0, cid)) => cid_from_exact_bytes(cid)
                            .map_err(|e| car_error(format!("root: {e}")))?,
                        _ => return Err(car_error("root CID lacks the 0x00 multibase prefix")),
                    };
                    list.push(cid);
                }
                roots = Some(list);
            }
            _ => c.skip(0)?,
        }
    }
    if !c.buf.is_empty() {
        return Err(car_error("trailing bytes after the header map"));
    }
    match version {
        Some(1) => roots.ok_or_else(|| car_error("CARv1 header without roots")),
        Some(2) => Err(car_error("CARv2 is not supported (send CARv1)")),
        Some(v) => Err(car_error(format!("unknown CAR version {v}"))),
        None => Err(car_error("header without a version")),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Incremental CARv1 decoder: push bytes, pull verified blocks.
#[derive(Debug)]
pub struct CarDecoder {
    buf: BytesMut,
    roots: Option<Vec<Cid>>,
    limits: CarLimits,
    total: u64,
    blocks: u64,
}

impl CarDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: CarLimits) -> Self {
        Self { buf: BytesMut::new(), roots: None, limits, total: 0, blocks: 0 }
    }

    /// Appends the next bytes of the CAR.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.total = self.total.saturating_add(data.len() as u64);
        if self.total > self.limits.max_total_bytes {
            return Err(RequestError::LimitExceeded(format!(
                "CAR larger than {} bytes",
                self.limits.max_total_bytes
            ))
            .into());
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The roots, once the header has been pushed and parsed.
    pub fn roots(&mut self) -> Result<Option<&[Cid]>> {
        self.parse_header()?;
        Ok(self.roots.as_deref())
    }

    /// Reads `varint(len) ‖ payload` from the buffer's front if complete: `(prefix, len)`.
    fn frame(&self, max: u64, what: &str) -> Result<Option<(usize, usize)>> {
        match read_varint(&self.buf) {
            Varint::Incomplete => Ok(None),
            Varint::Overflow => Err(car_error(format!("{what} length varint overflows"))),
            Varint::Value(len, n) => {
                if len > max {
                    return Err(car_error(format!(
                        "{what} of {len} bytes exceeds the {max}-byte limit"
                    )));
                }
                if len == 0 {
                    return Err(car_error(format!("zero-length {what}")));
                }
                let len = len as usize; // <= max, which fits
                Ok((self.buf.len() >= n + len).then_some((n, len)))
            }
        }
    }

    fn parse_header(&mut self) -> Result<()> {
        if self.roots.is_some() {
            return Ok(());
        }
        let Some((n, len)) = self.frame(self.limits.max_header as u64, "header")? else {
            return Ok(());
        };
        let header = self.buf.split_to(n + len);
        self.roots = Some(decode_car_header(&header[n..], &self.limits)?);
        Ok(())
    }

    /// The next complete block, verified against its CID; `None` if more bytes are needed.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>> {
        self.parse_header()?;
        if self.roots.is_none() {
            return Ok(None);
        }
        let Some((n, len)) = self.frame(MAX_SECTION, "section")? else { return Ok(None) };
        let section = self.buf.split_to(n + len).freeze();
        let mut rest = &section[n..];
        let cid = Cid::read_bytes(&mut rest).map_err(|e| car_error(format!("section CID: {e}")))?;
        let data = section.slice(section.len() - rest.len()..);
        verify_block(&cid, &data)?;
        self.blocks += 1;
        if self.blocks > self.limits.max_blocks {
            return Err(RequestError::LimitExceeded(format!(
                "more than {} blocks",
                self.limits.max_blocks
            ))
            .into());
        }
        Ok(Some((cid, data)))
    }

    /// Call at the end of input: fails if the header never came or a section is cut short.
    pub fn finish(&mut self) -> Result<()> {
        self.parse_header()?;
        if self.roots.is_none() {
            return Err(car_error(if self.buf.is_empty() {
                "empty input"
            } else {
                "truncated header"
            }));
        }
        if !self.buf.is_empty() {
            return Err(car_error(format!(
                "truncated: {} bytes of an incomplete section",
                self.buf.len()
            )));
        }
        Ok(())
    }

    /// Blocks decoded so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

/// Reads a whole CAR from `reader`, calling `on_block` for every verified block; returns the
/// roots.
pub fn read_car(
    mut reader: impl Read,
    limits: CarLimits,
    mut on_block: impl FnMut(Cid, Bytes) -> Result<()>,
) -> Result<Vec<Cid>> {
    let mut decoder = CarDecoder::new(limits);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LocalError::Stream(e).into()),
        };
        if n == 0 {
            break;
        }
        decoder.push(&buf[..n])?;
        while let Some((cid, data)) = decoder.next_block()? {
            on_block(cid, data)?;
        }
    }
    decoder.finish()?;
    Ok(decoder.roots.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Store integration
// ---------------------------------------------------------------------------------------------

/// The encoded pieces of a CAR of one DAG: the header, then one section per block, depth-first
/// in link order, each block once. Iterate it, or adapt it with [`CarChunks::into_stream`].
pub struct CarChunks {
    store: ContentStore,
    header: Option<Bytes>,
    stack: Vec<Cid>,
    seen: HashSet<Vec<u8>>,
    failed: bool,
}

impl CarChunks {
    fn section(&mut self, cid: Cid) -> Result<Option<Bytes>> {
        if !self.seen.insert(cid.to_bytes()) {
            return Ok(None);
        }
        let block = self.store.require_block(&cid)?;
        if cid.codec() == DAG_PB {
            let node = decode_dag_pb(&block).map_err(|e| ContentError::malformed(cid, e))?;
            self.stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        let cid_bytes = cid.to_bytes();
        let mut out = Vec::with_capacity(10 + cid_bytes.len() + block.len());
        put_varint(&mut out, (cid_bytes.len() + block.len()) as u64);
        out.extend_from_slice(&cid_bytes);
        out.extend_from_slice(&block);
        Ok(Some(out.into()))
    }

    /// An async stream of the pieces; each step reads the store on a blocking thread.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut chunks = state?;
            let step = tokio::task::spawn_blocking(move || {
                let next = chunks.next();
                (chunks, next)
            })
            .await;
            match step {
                Ok((chunks, Some(item))) => Some((item, Some(chunks))),
                Ok((_, None)) => None,
                Err(join) => Some((Err(LocalError::Task(join.to_string()).into()), None)),
            }
        })
    }
}

impl std::fmt::Debug for CarChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarChunks")
            .field("pending", &self.stack.len())
            .field("sent", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Iterator for CarChunks {
    type Item = Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(header) = self.header.take() {
            return Some(Ok(header));
        }
        while let Some(cid) = self.stack.pop() {
            match self.section(cid) {
                Ok(None) => continue,
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl ContentStore {
    /// The CAR of `root`'s DAG as a lazy sequence of byte chunks (for HTTP servers).
    pub fn car_chunks(&self, root: &Cid) -> CarChunks {
        CarChunks {
            store: self.clone(),
            header: Some(encode_car_header(std::slice::from_ref(root)).into()),
            stack: vec![*root],
            seen: HashSet::new(),
            failed: false,
        }
    }

    /// Writes the CAR of `root`'s DAG to `writer`. Every block must be present.
    pub fn export_car(&self, root: &Cid, mut writer: impl Write) -> Result<CarExport> {
        let mut report = CarExport::default();
        for (i, chunk) in self.car_chunks(root).enumerate() {
            let chunk = chunk?;
            writer.write_all(&chunk).map_err(LocalError::Stream)?;
            report.bytes += chunk.len() as u64;
            report.blocks += u64::from(i > 0);
        }
        writer.flush().map_err(LocalError::Stream)?;
        Ok(report)
    }

    /// Imports a CARv1 from `reader`, verifying every block. All or nothing: if any block is
    /// bad, the CAR is truncated or (with `pin_roots`) a root's DAG is incomplete, nothing
    /// from it stays in the store.
    pub fn import_car(&self, reader: impl Read, opts: &CarImportOptions) -> Result<CarImport> {
        let mut writer = self.writer();
        let mut blocks = 0u64;
        let roots = read_car(reader, opts.limits, |cid, data| {
            blocks += 1;
            // read_car verified the block.
            writer.put_trusted(&cid, &[&data])
        })?;
        self.finish_car_import(writer, roots, blocks, opts.pin_roots)
    }

    /// Shared tail of CAR imports: completeness check, pin, commit.
    pub(crate) fn finish_car_import(
        &self,
        writer: super::store::BlockWriter,
        roots: Vec<Cid>,
        blocks: u64,
        pin_roots: bool,
    ) -> Result<CarImport> {
        if pin_roots {
            for root in &roots {
                if let Some(missing) = self.first_missing(root)? {
                    return Err(car_error(format!(
                        "root {root} is incomplete: block {missing} is missing"
                    )));
                }
            }
        }
        let blocks_added = writer.blocks_added();
        writer.commit(if pin_roots { &roots } else { &[] })?;
        Ok(CarImport { roots, blocks, blocks_added })
    }
}

/// Whether two CIDs name the same bytes (same multihash), whatever their version or codec.
pub(crate) fn same_block(a: &Cid, b: &Cid) -> bool {
    block_key(a) == block_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let cid: Cid = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn".parse().unwrap();
        let v1: Cid =
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e".parse().unwrap();
        let header = encode_car_header(&[cid, v1]);
        let mut d = CarDecoder::new(CarLimits::default());
        d.push(&header).unwrap();
        assert_eq!(d.roots().unwrap().unwrap(), &[cid, v1]);
        d.finish().unwrap();
    }

    #[test]
    fn header_layout_matches_the_spec() {
        // {"roots": [tag42(0x00 ‖ cid)], "version": 1}, keys in DAG-CBOR order; a 34-byte
        // CIDv0 makes a 35-byte CBOR byte string (0x58 0x23) and a 0x38-byte header.
        let cid: Cid = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn".parse().unwrap();
        let header = encode_car_header(&[cid]);
        assert_eq!(header[0], 0x38);
        assert_eq!(header[0] as usize, header.len() - 1);
        assert_eq!(&header[1..9], &[0xa2, 0x65, b'r', b'o', b'o', b't', b's', 0x81]);
        assert_eq!(&header[9..13], &[0xd8, 0x2a, 0x58, 0x23]);
        assert_eq!(
            &header[header.len() - 9..],
            &[0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01]
        );
    }

    #[test]
    fn hostile_headers_are_typed_errors() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x05, 0xa1, 0x67, b'v', b'e', b'r'], // truncated key
            vec![0x0b, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02], // CARv2 pragma
            vec![0x02, 0xbf, 0xff],                   // indefinite map
            vec![0x03, 0x9b, 0xff, 0xff],             // absurd array length
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // varint overflow
            vec![0x00], // zero-length header
        ];
        for case in cases {
            let mut d = CarDecoder::new(CarLimits::default());
            d.push(&case).unwrap();
            let res = d.next_block().and_then(|_| d.finish());
            assert!(
                matches!(
                    res.as_ref().err().and_then(ContentError::untrusted),
                    Some(UntrustedError::Car(_))
                ),
                "{case:?}: {res:?}"
            );
        }
    }
}
