//! Live execution output: executors write chunks here as they run; `job logs --follow`
//! subscribers receive them. Finished output is read from the result files instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gadus_io::executor::Stream;
use tokio::sync::broadcast;

/// One chunk of output.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// stdout or stderr.
    pub stream: Stream,
    /// The bytes.
    pub data: Arc<[u8]>,
}

/// Per-execution broadcast channels for running executions.
#[derive(Clone, Default)]
pub struct LogHub {
    inner: Arc<Mutex<BTreeMap<String, broadcast::Sender<Chunk>>>>,
}

/// How many chunks a slow follower may lag before it misses some. With chunks of at most
/// [`MAX_CHUNK`] bytes, what the node holds for one execution's followers is bounded (16 MiB)
/// however fast the task prints.
const BUFFER: usize = 1024;

/// Largest chunk published: bigger writes are split.
const MAX_CHUNK: usize = 16 * 1024;

impl LogHub {
    /// Opens the channel for a starting execution.
    pub fn open(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.entry(id.to_string()).or_insert_with(|| broadcast::channel(BUFFER).0);
        }
    }

    /// Publishes a chunk (dropped when nobody listens).
    pub fn write(&self, id: &str, stream: Stream, bytes: &[u8]) {
        let sender = self.inner.lock().ok().and_then(|m| m.get(id).cloned());
        if let Some(tx) = sender {
            for piece in bytes.chunks(MAX_CHUNK) {
                let _ = tx.send(Chunk { stream, data: Arc::from(piece) });
            }
        }
    }

    /// Closes the channel: followers see the end of the stream.
    pub fn close(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(id);
        }
    }

    /// Subscribes to a running execution's output; `None` if it is not running here.
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<Chunk>> {
        self.inner.lock().ok().and_then(|m| m.get(id).map(broadcast::Sender::subscribe))
    }
}
