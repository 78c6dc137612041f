//! Captured stdout/stderr of a guest.
//!
//! Every write of the guest goes, in this order, to the result file on disk (`stdout` or
//! `stderr` in the results directory), to an in-memory prefix just long enough to build the
//! inline [`RunOutput`](crate::executor::RunOutput), and to the [`LogSink`] — so `job logs
//! --follow` sees output while the module still runs, the node's memory stays bounded however
//! much the guest prints, and the full output survives on disk.

use std::fs::File;
use std::io::{self, BufWriter, IoSlice, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmi_wasi::wasi_common::pipe::WritePipe;

use crate::executor::{LogSink, Stream};

/// Extra bytes kept beyond the inline limit: `truncate_utf8` cuts on a character boundary, and
/// a UTF-8 character is at most 4 bytes, so a prefix of `limit + 4` bytes yields exactly the
/// same inline text and truncation flag as the whole output would.
const UTF8_SLACK: usize = 4;

struct State {
    /// The full-output file, or `None` for in-memory captures (benchmarks).
    file: Option<BufWriter<File>>,
    /// The first `prefix_cap` bytes.
    prefix: Vec<u8>,
    prefix_cap: usize,
    /// The first error writing the file: the run then fails as `Internal` (a truncated result
    /// file must not be published as if complete).
    error: Option<String>,
    /// Bytes the guest wrote, and the most the file may hold.
    total: u64,
    file_cap: u64,
}

/// The guest wrote more than the node allows: its writes fail from then on, and the run fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverLimit {
    /// The limit, in bytes.
    pub cap: u64,
}

/// One captured stream, shared between the guest's WASI pipe and the executor.
#[derive(Clone)]
pub(crate) struct Capture {
    state: Arc<Mutex<State>>,
    stream: Stream,
    sink: Arc<dyn LogSink>,
}

impl Capture {
    /// Captures into `path` (created or truncated), keeping `inline_limit` bytes in memory
    /// and at most `file_cap` bytes in the file.
    pub(crate) fn to_file(
        path: &Path,
        inline_limit: usize,
        file_cap: u64,
        stream: Stream,
        sink: Arc<dyn LogSink>,
    ) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self::new(
            Some(BufWriter::new(file)),
            inline_limit.saturating_add(UTF8_SLACK),
            file_cap,
            stream,
            sink,
        ))
    }

    /// Captures up to `cap` bytes in memory only.
    pub(crate) fn in_memory(cap: usize, stream: Stream, sink: Arc<dyn LogSink>) -> Self {
        Self::new(None, cap, u64::MAX, stream, sink)
    }

    fn new(
        file: Option<BufWriter<File>>,
        prefix_cap: usize,
        file_cap: u64,
        stream: Stream,
        sink: Arc<dyn LogSink>,
    ) -> Self {
        Capture {
            state: Arc::new(Mutex::new(State {
                file,
                prefix: Vec::new(),
                prefix_cap,
                error: None,
                total: 0,
                file_cap,
            })),
            stream,
            sink,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes behind, still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The WASI file the guest writes to (fd 1 or 2).
    pub(crate) fn pipe(&self) -> WritePipe<CaptureWriter> {
        WritePipe::new(CaptureWriter(self.clone()))
    }

    /// Flushes the file; returns the captured prefix, or the first write error.
    pub(crate) fn finish(&self) -> Result<Vec<u8>, String> {
        let mut state = self.lock();
        if let Some(Err(e)) = state.file.as_mut().map(|f| f.flush()) {
            state.error.get_or_insert_with(|| e.to_string());
        }
        match &state.error {
            Some(e) => Err(e.clone()),
            None => Ok(state.prefix.clone()),
        }
    }

    /// The bytes captured in memory so far (a prefix of the output).
    pub(crate) fn prefix(&self) -> Vec<u8> {
        self.lock().prefix.clone()
    }

    /// Whether the guest wrote more than the file may hold.
    pub(crate) fn over_limit(&self) -> Option<OverLimit> {
        let state = self.lock();
        (state.total > state.file_cap).then_some(OverLimit { cap: state.file_cap })
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        {
            let mut state = self.lock();
            // Past the cap the file keeps exactly `file_cap` bytes and every later write fails
            // (EFBIG to the guest), so a print loop stops instead of filling the node's disk
            // and the log followers' buffers.
            let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            let room = state.file_cap.saturating_sub(state.total);
            state.total = state.total.saturating_add(len);
            if len > room {
                let keep = usize::try_from(room).unwrap_or(usize::MAX);
                if let Some(f) = state.file.as_mut() {
                    let _ = f.write_all(&buf[..keep]);
                }
                return Err(io::Error::from_raw_os_error(rustix::io::Errno::FBIG.raw_os_error()));
            }
            if let Some(Err(e)) = state.file.as_mut().map(|f| f.write_all(buf)) {
                state.error.get_or_insert_with(|| e.to_string());
                return Err(e);
            }
            let room = state.prefix_cap.saturating_sub(state.prefix.len());
            let keep = room.min(buf.len());
            state.prefix.extend_from_slice(&buf[..keep]);
        }
        // Outside the lock: the sink must not block, but it need not be fast either.
        self.sink.write(self.stream, buf);
        Ok(())
    }
}

/// The `Write` end handed to wasi-common's [`WritePipe`].
pub(crate) struct CaptureWriter(Capture);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The default writes only the first buffer; a guest's `writev` of a line and its newline
        // would then reach the sink as two calls and cost a second WASI round trip.
        let mut n = 0;
        for buf in bufs {
            self.0.write_all(buf)?;
            n += buf.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
