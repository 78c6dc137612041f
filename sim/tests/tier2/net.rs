//! The simulated network under the node: a [`Transport`] over turmoil TCP carrying the same
//! length-prefixed frames the libp2p transport carries, the API listener, and an HTTP/1 client.
//!
//! turmoil's TCP keeps order but does not retransmit: a segment dropped by a partition leaves a
//! gap that stalls the stream for good. So the receiver answers every frame with one ack byte,
//! and a sender that sees no ack for [`ACK_TIMEOUT`] drops the connection and dials again; what
//! was in flight is lost, as the protocol allows (it re-sends until acknowledged).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gadus_core::protocol::{
    Envelope, Message, PROTOCOL_VERSION, decode_payload, encode_frame, frame_len,
};
use gadus_io::transport::{Inbound, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

use crate::record::Recorder;

/// Where every node listens for peers.
pub const PEER_PORT: u16 = 7000;
/// Where every node serves its HTTP API.
pub const API_PORT: u16 = 1234;
/// A sender with an unacknowledged frame this old treats the connection as broken.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a dial may take before it counts as failed (a partition drops the SYN).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between dials to an unreachable peer.
const REDIAL: Duration = Duration::from_millis(500);
/// Messages queued per peer while it is unreachable; more are dropped (best effort).
const QUEUE: usize = 1024;

/// The node's transport: one outbound connection per peer (dialled and re-dialled by a task),
/// inbound connections read by the listener's tasks.
pub struct SimTransport {
    id: String,
    queues: BTreeMap<String, mpsc::Sender<Message>>,
}

impl Transport for SimTransport {
    fn local_id(&self) -> &str {
        &self.id
    }

    fn send(&self, to: &str, message: Message) -> Result<(), TransportError> {
        let q = self.queues.get(to).ok_or_else(|| TransportError::Unreachable(to.to_string()))?;
        match q.try_send(message) {
            Ok(()) => Ok(()),
            // A full queue drops the message: the protocol recovers from loss.
            Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TransportError::Closed),
        }
    }
}

impl SimTransport {
    /// Starts listening and dialling `peers` (turmoil host names, which are also node IDs).
    /// Must run inside the host's software.
    pub fn start(
        id: &str,
        peers: &[String],
        inbound: mpsc::Sender<Inbound>,
        rec: Recorder,
    ) -> Arc<SimTransport> {
        let mut queues = BTreeMap::new();
        for peer in peers.iter().filter(|p| *p != id) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(peer.clone(), tx);
            tokio::spawn(dial(id.to_string(), peer.clone(), rx, inbound.clone(), rec.clone()));
        }
        tokio::spawn(listen(id.to_string(), inbound, rec));
        Arc::new(SimTransport { id: id.to_string(), queues })
    }
}

/// Keeps one connection to `peer` and writes the queued messages to it.
async fn dial(
    id: String,
    peer: String,
    mut rx: mpsc::Receiver<Message>,
    inbound: mpsc::Sender<Inbound>,
    rec: Recorder,
) {
    loop {
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((peer.as_str(), PEER_PORT)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(REDIAL).await;
                continue;
            }
        };
        rec.line(format!("link {id}->{peer} up"));
        let _ = inbound.send(Inbound::PeerUp { node: peer.clone(), api: None, addr: None }).await;
        let (mut r, mut w) = stream.into_split();
        let mut unacked: std::collections::VecDeque<tokio::time::Instant> = Default::default();
        let mut ack = [0u8; 64];
        let why = loop {
            let deadline = unacked.front().map(|t| *t + ACK_TIMEOUT);
            tokio::select! {
                biased;
                n = r.read(&mut ack) => match n {
                    Ok(0) | Err(_) => break "closed",
                    Ok(n) => {
                        for _ in 0..n {
                            unacked.pop_front();
                        }
                    }
                },
                () = sleep_until(deadline) => break "ack timeout",
                m = rx.recv() => {
                    let Some(message) = m else { return };
                    let env = Envelope {
                        version: PROTOCOL_VERSION,
                        from: id.clone(),
                        to: peer.clone(),
                        message,
                    };
                    let Ok(frame) = encode_frame(&env) else { continue };
                    if w.write_all(&frame).await.is_err() {
                        break "write failed";
                    }
                    unacked.push_back(tokio::time::Instant::now());
                }
            }
        };
        rec.line(format!("link {id}->{peer} down ({why})"));
        if why == "ack timeout" {
            rec.mark("stalled-link-redialled");
        }
        let _ = inbound.send(Inbound::PeerDown { node: peer.clone() }).await;
        tokio::time::sleep(REDIAL).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Accepts peers' connections; each is read by its own task. A newer connection from the same
/// peer replaces (aborts) the older one's reader, which may be stalled on a lost segment.
async fn listen(id: String, inbound: mpsc::Sender<Inbound>, rec: Recorder) {
    let listener = match TcpListener::bind(("0.0.0.0", PEER_PORT)).await {
        Ok(l) => l,
        Err(e) => panic!("{id}: cannot listen for peers: {e}"),
    };
    let readers: Arc<Mutex<BTreeMap<String, tokio::task::AbortHandle>>> = Default::default();
    while let Ok((stream, _)) = listener.accept().await {
        let (me_tx, me_rx) = tokio::sync::oneshot::channel::<tokio::task::AbortHandle>();
        let task = tokio::spawn(read_peer(
            id.clone(),
            stream,
            me_rx,
            readers.clone(),
            inbound.clone(),
            rec.clone(),
        ));
        let _ = me_tx.send(task.abort_handle());
    }
}

/// Reads one inbound connection: acks and delivers every frame addressed to this node.
async fn read_peer(
    id: String,
    stream: TcpStream,
    me: tokio::sync::oneshot::Receiver<tokio::task::AbortHandle>,
    readers: Arc<Mutex<BTreeMap<String, tokio::task::AbortHandle>>>,
    inbound: mpsc::Sender<Inbound>,
    rec: Recorder,
) {
    let Ok(me) = me.await else { return };
    let (mut r, mut w) = stream.into_split();
    let mut peer: Option<String> = None;
    loop {
        let env = match read_envelope(&mut r).await {
            Ok(env) => env,
            Err(e) => {
                rec.line(format!(
                    "recv {id}<-{}: connection ends: {e}",
                    peer.as_deref().unwrap_or("?")
                ));
                return;
            }
        };
        if w.write_all(&[1]).await.is_err() {
            return;
        }
        if env.to != id {
            rec.line(format!("recv {id}: frame for {} dropped", env.to));
            continue;
        }
        if peer.is_none() {
            peer = Some(env.from.clone());
            if let Ok(mut m) = readers.lock()
                && let Some(old) = m.insert(env.from.clone(), me.clone())
            {
                old.abort();
            }
        }
        let about = env.message.exec().map(|e| e.execution_id.as_str()).unwrap_or("");
        rec.line(format!("msg {}->{id} {} {about}", env.from, env.message.name()));
        if inbound.send(Inbound::Message { from: env.from, message: env.message }).await.is_err() {
            return;
        }
    }
}

/// Reads one frame and decodes it (bounded by the frame limit before allocating).
async fn read_envelope<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<Envelope, String> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let len = frame_len(prefix).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
    decode_payload(&payload).map_err(|e| e.to_string())
}

/// turmoil's listener as an axum listener, so the node's real router serves on simulated TCP.
pub struct ApiListener(pub TcpListener);

impl axum::serve::Listener for ApiListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok(c) = self.0.accept().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
