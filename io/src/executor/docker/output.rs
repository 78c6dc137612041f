//! Where a container's output goes: the `stdout`/`stderr` result files, the [`LogSink`], and a
//! bounded head kept in memory for the inline [`RunOutput`].
//!
//! Output is streamed to the files as it arrives rather than buffered, so a task printing
//! gigabytes costs the node disk (capped by `DockerConfig::max_output_file_bytes`), not memory.

use std::path::Path;
use std::sync::Arc;

use tokio::fs::File;
use tokio::io::AsyncWriteExt;

use crate::executor::{LogSink, OutputLimits, RunOutput, Stream, truncate_utf8};

/// One stream's file and head.
struct StreamOut {
    // Unbuffered: each chunk (a log line, at most 16 KiB) is one write, so the result files
    // can be followed while the task runs.
    file: File,
    head: Vec<u8>,
    head_limit: usize,
    total: u64,
    file_cap: u64,
}

impl StreamOut {
    async fn create(path: &Path, head_limit: usize, file_cap: u64) -> std::io::Result<Self> {
        Ok(StreamOut {
            file: File::create(path).await?,
            head: Vec::new(),
            head_limit,
            total: 0,
            file_cap,
        })
    }

    async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let room = self.head_limit.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let file_room =
            usize::try_from(self.file_cap.saturating_sub(self.total)).unwrap_or(usize::MAX);
        if file_room > 0 {
            self.file.write_all(&bytes[..file_room.min(bytes.len())]).await?;
        }
        self.total = self.total.saturating_add(bytes.len() as u64);
        Ok(())
    }
}

/// Collects the two streams of one execution.
pub struct Collector {
    stdout: StreamOut,
    stderr: StreamOut,
    sink: Arc<dyn LogSink>,
}

/// What was collected, once the streams are closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// First bytes of stdout (at most the inline limit).
    pub stdout_head: Vec<u8>,
    /// Bytes the container wrote to stdout.
    pub stdout_total: u64,
    /// First bytes of stderr.
    pub stderr_head: Vec<u8>,
    /// Bytes the container wrote to stderr.
    pub stderr_total: u64,
}

impl Collector {
    /// Creates (truncating) `dir/stdout` and `dir/stderr`.
    pub async fn create(
        dir: &Path,
        limits: OutputLimits,
        sink: Arc<dyn LogSink>,
        file_cap: u64,
    ) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(dir).await?;
        Ok(Collector {
            stdout: StreamOut::create(&dir.join("stdout"), limits.stdout, file_cap).await?,
            stderr: StreamOut::create(&dir.join("stderr"), limits.stderr, file_cap).await?,
            sink,
        })
    }

    /// Appends a chunk of one stream and forwards it to the sink.
    pub async fn push(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        self.sink.write(stream, bytes);
        match stream {
            Stream::Stdout => self.stdout.push(bytes).await,
            Stream::Stderr => self.stderr.push(bytes).await,
        }
    }

    /// Flushes the files.
    pub async fn finish(mut self) -> std::io::Result<Captured> {
        self.stdout.file.flush().await?;
        self.stderr.file.flush().await?;
        self.stdout.file.sync_data().await?;
        self.stderr.file.sync_data().await?;
        Ok(Captured {
            stdout_head: self.stdout.head,
            stdout_total: self.stdout.total,
            stderr_head: self.stderr.head,
            stderr_total: self.stderr.total,
        })
    }
}

impl Captured {
    /// The inline output: heads cut on a UTF-8 boundary, flagged when anything was left out.
    pub fn run_output(&self, exit_code: i64, limits: OutputLimits) -> RunOutput {
        let (stdout, stdout_cut) = truncate_utf8(&self.stdout_head, limits.stdout);
        let (stderr, stderr_cut) = truncate_utf8(&self.stderr_head, limits.stderr);
        RunOutput {
            stdout,
            stdout_truncated: stdout_cut || self.stdout_total > self.stdout_head.len() as u64,
            stderr,
            stderr_truncated: stderr_cut || self.stderr_total > self.stderr_head.len() as u64,
            exit_code,
            error_msg: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Stream, Vec<u8>)>>);

    impl LogSink for Recorder {
        fn write(&self, stream: Stream, bytes: &[u8]) {
            self.0.lock().unwrap().push((stream, bytes.to_vec()));
        }
    }

    #[tokio::test]
    async fn streams_to_files_sink_and_bounded_heads() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Recorder::default());
        let limits = OutputLimits { stdout: 4, stderr: 100 };
        let mut c = Collector::create(dir.path(), limits, sink.clone(), 7).await.unwrap();
        c.push(Stream::Stdout, b"hello ").await.unwrap();
        c.push(Stream::Stderr, b"oops").await.unwrap();
        c.push(Stream::Stdout, b"world").await.unwrap();
        let cap = c.finish().await.unwrap();
        // file capped at 7 bytes, head at 4, total counted.
        assert_eq!(std::fs::read(dir.path().join("stdout")).unwrap(), b"hello w");
        assert_eq!(std::fs::read(dir.path().join("stderr")).unwrap(), b"oops");
        assert_eq!(cap.stdout_total, 11);
        let out = cap.run_output(3, limits);
        assert_eq!(out.stdout, "hell");
        assert!(out.stdout_truncated);
        assert_eq!(out.stderr, "oops");
        assert!(!out.stderr_truncated);
        assert_eq!(out.exit_code, 3);
        assert_eq!(sink.0.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn cut_inside_a_character_stays_valid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutputLimits { stdout: 2, stderr: 2 };
        let mut c =
            Collector::create(dir.path(), limits, Arc::new(crate::executor::NoLogs), u64::MAX)
                .await
                .unwrap();
        c.push(Stream::Stdout, "aé".as_bytes()).await.unwrap();
        let out = c.finish().await.unwrap().run_output(0, limits);
        assert_eq!(out.stdout, "a");
        assert!(out.stdout_truncated);
    }
}
