//! The cluster transport: libp2p over TCP (noise + yamux).
//!
//! ## What runs where
//!
//! [`P2pTransport::start`] builds a swarm and moves it onto one spawned tokio task, the
//! *driver*. Everything that touches libp2p state happens on that task; the node loop only sees
//! [`P2pTransport::send`], which encodes the message on the caller's thread (so an oversized
//! message is refused synchronously, as the [`Transport`] trait promises) and hands the frame to
//! the driver over an unbounded channel. `send` therefore never waits for the network. The
//! driver's own queues are bounded, so the channel only holds what the driver has not looked at
//! yet.
//!
//! The node ID is the base58 [`PeerId`] of an ed25519 key persisted in a key file: a node
//! keeps its identity across restarts, and every byte a peer receives is authenticated by noise
//! (point-to-point) or by the gossipsub signature (broadcast). The `from` the node loop sees is
//! always that authenticated peer, never the sender's claim inside the envelope; an envelope
//! whose claimed sender differs is refused.
//!
//! ## Two paths for messages
//!
//! - **Gossipsub, topic `gadus/nodes/1`** carries `NodeInfo` and `Heartbeat`, signed by the
//!   sender's identity (`MessageAuthenticity::Signed`, validation `Strict`, and application
//!   validation: a frame that does not decode, claims another sender, or carries a
//!   point-to-point message is `Reject`ed so the publisher's peer score drops). A heartbeat
//!   lists the executions the node holds *for one orchestrator*, so the envelope keeps its `to`
//!   and a receiver delivers only what is addressed to it: handing another orchestrator's
//!   heartbeat to the node loop would make it cancel executions it does not know about. A
//!   broadcast message is published only when its addressee is subscribed to the topic;
//!   otherwise (or if publishing fails) it takes the point-to-point path, so `send(to, ..)`
//!   reaches `to` either way. The same frame sent twice within a second is published once.
//! - **Request-response, protocol `/gadus/proto/1`** carries everything else. The request is
//!   one frame of the core's wire format (4-byte length prefix + bincode envelope); the
//!   [`FrameCodec`] checks the prefix against the configured limit *before* allocating the
//!   buffer. The response is a one-byte [`Ack`]: `Accepted` (the message is queued for the node
//!   loop), `Refused` (it will never be accepted: malformed, wrong sender, wrong addressee;
//!   the sender drops it instead of retrying forever) or `Busy` (the receiver's inbound queue
//!   is full; the sender retries later, which is the back-pressure).
//!
//! ## Delivery
//!
//! Each peer has an outbound queue. Frames leave it while the peer is connected (a bounded
//! number in flight); a failed request (dial failure, closed connection, timeout, `Busy`) goes
//! back to the front and the peer backs off (100 ms doubling to 5 s). A queue holds at most
//! [`MAX_QUEUED_PER_PEER`] frames; beyond that the oldest is dropped and counted. When the
//! addressee is not connected, the driver dials it with every address it has learned for it
//! (bootstrap entries, identify's listen addresses, mDNS, addresses that worked before). It
//! keeps that address book itself because libp2p forgets an address after one failed dial,
//! which would make a restarted peer unreachable. Delivery is at least once and not
//! necessarily in order (retried frames overtake newer ones, gossip overtakes the queue): the
//! core's handlers are idempotent (fencing numbers) and tolerate reordering and loss anyway.
//! A shutdown gives frames queued for connected peers a short grace period, so a `Goodbye`
//! sent just before it still goes out.
//!
//! ## Peers
//!
//! `PeerUp` is emitted when identify completes for a peer that lists `/gadus/proto/1`; its HTTP
//! API URL travels in identify's agent version (`gadus/<version> api=<url>`). `PeerDown` follows
//! when its last connection closes. Bootstrap peers are dialled at start and re-dialled with
//! back-off whenever they are disconnected, so a cluster heals after a restart. Every connected
//! peer is made a gossipsub *explicit peer*, so broadcasts reach it directly without waiting
//! for the mesh to form (small clusters are the common case); the gossipsub heartbeat is short
//! (200 ms) for the same reason. Connections stay open for an hour of idleness (libp2p's
//! default closes them after 10 s), and `connection_limits` bounds how many a node holds.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use gadus_core::protocol::{
    Envelope, MAX_FRAME_BYTES, Message, NodeId, PROTOCOL_VERSION, WireError, decode_payload,
    encode_frame,
};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, mdns, noise, ping, tcp,
    yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Inbound, Transport, TransportError};

/// Where `gadus serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/1235";
/// The point-to-point protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/gadus/proto/1");
/// The gossipsub topic for NodeInfo and heartbeats.
pub const NODES_TOPIC: &str = "gadus/nodes/1";
/// Identify's protocol version: peers outside the gadus family are still identified, but only
/// those listing [`PROTOCOL`] become `PeerUp`.
const IDENTIFY_PROTOCOL: &str = "/gadus/id/1";
/// Frames kept per peer while it is unreachable; older ones are dropped beyond this.
pub const MAX_QUEUED_PER_PEER: usize = 10_000;
/// Requests outstanding to one peer at a time: enough to keep a link busy without letting one
/// slow peer hold hundreds of streams.
const MAX_IN_FLIGHT_PER_PEER: usize = 32;
/// Back-off after a failure, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a request may wait for its ack before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often queues and bootstrap peers are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Messages decoded but not yet taken by the node loop; beyond this, requests get `Busy`.
const MAX_PENDING_INBOUND: usize = 4096;
/// Addresses remembered per peer (a peer listening on 0.0.0.0 reports one per interface).
const MAX_ADDRS_PER_PEER: usize = 16;
/// Window in which an identical broadcast frame is published only once.
const PUBLISH_DEDUP_WINDOW: Duration = Duration::from_secs(1);
/// How long a shutdown waits for queued frames to connected peers to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long `start` waits for the first listener to come up.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// How the transport is set up.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Where to listen, e.g. [`DEFAULT_LISTEN`] (empty: dial-only node).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and keep connected; each ends with `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// The ed25519 identity (protobuf encoding); created with mode 0600 if absent.
    pub key_file: PathBuf,
    /// This node's HTTP API base URL, advertised to peers.
    pub api_url: Option<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Largest frame payload sent or accepted (capped at the core's [`MAX_FRAME_BYTES`]).
    pub max_frame: usize,
    /// Dial peers at the addresses they advertise (identify, mDNS). A node behind NAT or a
    /// tunnel turns this off: it reaches the cluster only through its bootstrap addresses,
    /// since what peers advertise may be unroutable from where it sits.
    pub learn_peer_addrs: bool,
    /// A private network's pre-shared key: every connection starts with a handshake under
    /// it, so a peer without the key cannot connect at all (see [`load_swarm_key`]).
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
}

/// Reads a swarm key in the IPFS format (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex
/// digits), the file Kubo's private networks use.
pub fn load_swarm_key(path: &Path) -> Result<libp2p::pnet::PreSharedKey, P2pError> {
    let unusable =
        |why: String| P2pError::InvalidConfig(format!("swarm key {}: {why}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1025).read_to_string(&mut text))
        .map_err(|e| unusable(e.to_string()))?;
    if text.len() > 1024 {
        return Err(unusable("too long for a swarm key".into()));
    }
    text.parse::<libp2p::pnet::PreSharedKey>().map_err(|e| unusable(e.to_string()))
}

impl P2pConfig {
    /// Defaults for a node listening on `listen` with identity `key_file`.
    pub fn new(listen: Vec<Multiaddr>, key_file: PathBuf) -> Self {
        P2pConfig {
            listen,
            bootstrap: Vec::new(),
            key_file,
            api_url: None,
            mdns: false,
            max_connections: 512,
            max_connections_per_peer: 2,
            max_frame: MAX_FRAME_BYTES,
            learn_peer_addrs: true,
            swarm_key: None,
        }
    }
}

/// Why the transport could not start. Named by who has to act.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The operator's key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The operator's key file exists but does not hold an ed25519 key in protobuf encoding.
    #[error("key file {path} is not a valid ed25519 identity: {reason}")]
    KeyFileInvalid {
        /// The file.
        path: PathBuf,
        /// Detail.
        reason: String,
    },
    /// The caller's configuration is unusable (bad address, bootstrap entry without a peer ID).
    #[error("invalid p2p configuration: {0}")]
    InvalidConfig(String),
    /// The OS refused to listen (address in use, no such interface, ...).
    #[error("cannot listen: {0}")]
    ListenFailed(String),
    /// libp2p could not be set up (a bug or an unsupported platform).
    #[error("libp2p setup failed: {0}")]
    Setup(String),
}

/// A connected gadus peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node ID.
    pub node: NodeId,
    /// Its HTTP API base URL, when it advertises one.
    pub api: Option<String>,
}

// ------------------------------------------------------------------------------- identity

/// Loads the ed25519 identity in `path`, creating it (mode 0600) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, P2pError> {
    let io_err = |source| P2pError::KeyFileIo { path: path.to_path_buf(), source };
    match std::fs::read(path) {
        Ok(bytes) => return decode_key(path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().map_err(|e| P2pError::Setup(e.to_string()))?;
    // Written under a temporary name and hard-linked into place: a crash never leaves a
    // truncated key behind, and if another process created the key meanwhile, the link fails
    // and that key wins (both processes then agree on one identity).
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = write_private(&tmp, &bytes).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path).map_err(io_err)?;
            decode_key(path, &bytes)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The node ID stored in (or newly created in) `path`: what [`P2pTransport::local_id`] will
/// return for a transport started with that key file.
pub fn peer_id_from_key_file(path: &Path) -> Result<NodeId, P2pError> {
    Ok(load_or_create_key(path)?.public().to_peer_id().to_base58())
}

fn decode_key(path: &Path, bytes: &[u8]) -> Result<Keypair, P2pError> {
    let invalid = |reason: String| P2pError::KeyFileInvalid { path: path.to_path_buf(), reason };
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|e| invalid(e.to_string()))?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(invalid(format!("key type {:?}, expected ed25519", key.key_type())));
    }
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

// ---------------------------------------------------------------------------------- codec

/// One encoded frame (4-byte big-endian length prefix + payload), as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(pub Bytes);

/// The receiver's answer to a point-to-point frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Queued for the node loop.
    Accepted,
    /// Never acceptable (malformed, forged sender, wrong addressee): do not retry.
    Refused,
    /// The receiver is overloaded: retry later.
    Busy,
}

impl Ack {
    fn byte(self) -> u8 {
        match self {
            Ack::Accepted => 0,
            Ack::Refused => 1,
            Ack::Busy => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Ack> {
        match b {
            0 => Some(Ack::Accepted),
            1 => Some(Ack::Refused),
            2 => Some(Ack::Busy),
            _ => None,
        }
    }
}

/// The request-response codec: requests are frames, responses one [`Ack`] byte.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec accepting payloads of at most `max_frame` bytes (capped at [`MAX_FRAME_BYTES`]).
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame: max_frame.min(MAX_FRAME_BYTES) }
    }

    /// Reads one frame. The length prefix is checked against the limit before the payload
    /// buffer is allocated, so a peer claiming gigabytes costs four bytes of reading.
    pub async fn read_frame<T: AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Frame> {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                WireError::TooLarge(len).to_string(),
            ));
        }
        let mut buf = vec![0u8; 4 + len];
        buf[..4].copy_from_slice(&prefix);
        io.read_exact(&mut buf[4..]).await?;
        Ok(Frame(Bytes::from(buf)))
    }

    /// Decodes a frame read by [`FrameCodec::read_frame`] into an envelope.
    pub fn decode(&self, frame: &Frame) -> Result<Envelope, WireError> {
        let Some((prefix, payload)) = frame.0.split_first_chunk::<4>() else {
            return Err(WireError::Truncated);
        };
        let declared = u32::from_be_bytes(*prefix) as usize;
        if declared > self.max_frame {
            return Err(WireError::TooLarge(declared));
        }
        if declared != payload.len() {
            return Err(WireError::LengthMismatch { declared, actual: payload.len() });
        }
        decode_payload(payload)
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        Ack::from_byte(b[0]).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unknown ack byte {}", b[0]))
        })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req.0).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[res.byte()]).await
    }
}

// ------------------------------------------------------------------------------ behaviour

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so a connection over the limit is denied before other behaviours set up for it.
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    rr: request_response::Behaviour<FrameCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

fn agent_version(api: Option<&str>) -> String {
    match api {
        Some(url) => format!("gadus/{} api={url}", env!("CARGO_PKG_VERSION")),
        None => format!("gadus/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// The IP address in a multiaddr (`/ip4/1.2.3.4/tcp/5`), if it has one.
fn multiaddr_ip(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    })
}

/// The API URL in an agent version written by [`agent_version`].
fn api_from_agent(agent: &str) -> Option<String> {
    agent
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

fn build_behaviour(key: &Keypair, cfg: &P2pConfig, max_frame: usize) -> Result<Behaviour, String> {
    let local = key.public().to_peer_id();
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
            .with_agent_version(agent_version(cfg.api_url.as_deref())),
    );

    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(200))
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        // Room for the signature, key and protobuf framing around the largest frame.
        .max_transmit_size(max_frame + 4 + 1024)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_cfg)
            .map_err(|e| format!("gossipsub: {e}"))?;
    // Scoring is what makes `Reject` cost the publisher something. Only invalid messages are
    // penalised: the delivery-rate penalties assume busy topics and would punish honest peers
    // of a quiet cluster, and the same-IP penalty would punish clusters on one host.
    let topic = IdentTopic::new(NODES_TOPIC);
    let topic_params = gossipsub::TopicScoreParams {
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        ..Default::default()
    };
    let mut score =
        gossipsub::PeerScoreParams { ip_colocation_factor_weight: 0.0, ..Default::default() };
    score.topics.insert(topic.hash(), topic_params);
    gossipsub
        .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| format!("gossipsub scoring: {e}"))?;
    gossipsub.subscribe(&topic).map_err(|e| format!("gossipsub subscribe: {e}"))?;

    let rr = request_response::Behaviour::with_codec(
        FrameCodec::new(max_frame),
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(4 * MAX_IN_FLIGHT_PER_PEER),
    );

    let mdns = if cfg.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| format!("mdns: {e}"))?,
        )
    } else {
        None
    };

    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer)),
    );

    Ok(Behaviour {
        limits,
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub,
        rr,
        mdns: Toggle::from(mdns),
    })
}

/// Splits `/…/p2p/<id>` into the peer and the address without the suffix.
fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}

fn is_broadcast(m: &Message) -> bool {
    matches!(m, Message::NodeInfo { .. } | Message::Heartbeat { .. })
}

// ------------------------------------------------------------------------------ transport

enum Command {
    /// A frame for `to`; `broadcast` frames may go out on gossipsub.
    Send { to: PeerId, frame: Bytes, broadcast: bool },
    /// A message to this node itself (a node that is both orchestrator and compute).
    Local(Message),
    /// Stop the driver; answered once the swarm is dropped.
    Shutdown(oneshot::Sender<()>),
}

/// State the driver publishes for [`P2pHandle`].
#[derive(Default)]
struct Shared {
    listen_addrs: Mutex<Vec<Multiaddr>>,
    peers: Mutex<BTreeMap<NodeId, Option<String>>>,
    dropped: AtomicU64,
    published: AtomicU64,
}

/// Sends the core's messages over libp2p. See the module documentation.
pub struct P2pTransport {
    local_id: NodeId,
    local_peer: PeerId,
    max_frame: usize,
    commands: mpsc::UnboundedSender<Command>,
}

/// Controls a running transport.
pub struct P2pHandle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl P2pTransport {
    /// Loads (or creates) the identity, starts listening, dials the bootstrap peers and
    /// spawns the swarm. Returns once at least one listener is up (when any is configured).
    pub async fn start(
        cfg: P2pConfig,
    ) -> Result<(Arc<P2pTransport>, mpsc::Receiver<Inbound>, P2pHandle), P2pError> {
        if cfg.max_connections == 0 || cfg.max_connections_per_peer == 0 || cfg.max_frame == 0 {
            return Err(P2pError::InvalidConfig(
                "max_connections, max_connections_per_peer and max_frame must be positive".into(),
            ));
        }
        let key = load_or_create_key(&cfg.key_file)?;
        let local_peer = key.public().to_peer_id();
        let max_frame = cfg.max_frame.min(MAX_FRAME_BYTES);

        let mut bootstrap: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in &cfg.bootstrap {
            let (peer, bare) = split_p2p(addr).ok_or_else(|| {
                P2pError::InvalidConfig(format!("bootstrap address {addr} lacks /p2p/<peer id>"))
            })?;
            if peer != local_peer {
                bootstrap.entry(peer).or_default().push(bare);
            }
        }

        let behaviour_cfg = cfg.clone();
        let psk = cfg.swarm_key;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| {
                use libp2p::Transport as _;
                use libp2p::core::muxing::StreamMuxerBox;
                use libp2p::core::upgrade::Version;
                let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
                let noise = noise::Config::new(key)?;
                // With a swarm key, the pnet handshake comes first, before noise: a stranger
                // cannot even learn this node's identity. Both shapes are boxed to one type.
                let transport = match psk {
                    Some(psk) => tcp
                        .and_then(move |socket, _| {
                            libp2p::pnet::PnetConfig::new(psk).handshake(socket)
                        })
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                        .boxed(),
                    None => tcp
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                        .boxed(),
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
            })
            .map_err(|e| P2pError::Setup(e.to_string()))?
            .with_behaviour(|key| {
                build_behaviour(key, &behaviour_cfg, max_frame)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| P2pError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();

        let mut listeners: HashSet<ListenerId> = HashSet::new();
        for addr in &cfg.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| P2pError::ListenFailed(format!("{addr}: {e}")))?;
            listeners.insert(id);
        }
        let shared = Arc::new(Shared::default());
        if !listeners.is_empty() {
            wait_for_listener(&mut swarm, &listeners, &shared, local_peer).await?;
        }

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(1024);
        let mut driver = Driver {
            swarm,
            local_peer,
            commands: cmd_rx,
            inbound: in_tx,
            pending: VecDeque::new(),
            queues: HashMap::new(),
            in_flight: HashMap::new(),
            addrs: HashMap::new(),
            learn_peer_addrs: cfg.learn_peer_addrs,
            dialing: HashSet::new(),
            bootstrap: HashMap::new(),
            up: HashSet::new(),
            remote_ips: HashMap::new(),
            last_published: None,
            closing: None,
            topic: IdentTopic::new(NODES_TOPIC),
            codec: FrameCodec::new(max_frame),
            shared: shared.clone(),
        };
        let now = Instant::now();
        for (peer, addrs) in bootstrap {
            driver.bootstrap.insert(peer, BootPeer { addrs, backoff: Backoff::new(now) });
        }
        driver.redial_bootstrap();
        let task = tokio::spawn(driver.run());

        let transport = Arc::new(P2pTransport {
            local_id: local_peer.to_base58(),
            local_peer,
            max_frame,
            commands: cmd_tx.clone(),
        });
        let handle =
            P2pHandle { shared, commands: cmd_tx, task: tokio::sync::Mutex::new(Some(task)) };
        Ok((transport, in_rx, handle))
    }

    /// This node's libp2p peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.local_peer
    }
}

async fn wait_for_listener(
    swarm: &mut Swarm<Behaviour>,
    listeners: &HashSet<ListenerId>,
    shared: &Shared,
    local: PeerId,
) -> Result<(), P2pError> {
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    lock(&shared.listen_addrs).push(address.with(Protocol::P2p(local)));
                    return Ok(());
                }
                SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. }
                    if listeners.contains(&listener_id) =>
                {
                    return Err(P2pError::ListenFailed(e.to_string()));
                }
                SwarmEvent::ListenerError { listener_id, error }
                    if listeners.contains(&listener_id) =>
                {
                    return Err(P2pError::ListenFailed(error.to_string()));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(LISTEN_WAIT, wait).await.map_err(|_| {
        P2pError::ListenFailed(format!("no listener came up within {LISTEN_WAIT:?}"))
    })?
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain inserts and
/// removals), so poisoning is ignored rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Transport for P2pTransport {
    fn local_id(&self) -> &str {
        &self.local_id
    }

    fn send(&self, to: &str, message: Message) -> Result<(), TransportError> {
        if to == self.local_id {
            return self.commands.send(Command::Local(message)).map_err(|_| TransportError::Closed);
        }
        let peer: PeerId = to.parse().map_err(|_| TransportError::Unreachable(to.to_string()))?;
        let broadcast = is_broadcast(&message);
        let env = Envelope {
            version: PROTOCOL_VERSION,
            from: self.local_id.clone(),
            to: to.to_string(),
            message,
        };
        let frame = encode_frame(&env).map_err(|e| TransportError::TooLarge(e.to_string()))?;
        if frame.len() - 4 > self.max_frame {
            return Err(TransportError::TooLarge(format!(
                "{} bytes exceed the {}-byte frame limit",
                frame.len() - 4,
                self.max_frame
            )));
        }
        self.commands
            .send(Command::Send { to: peer, frame: Bytes::from(frame), broadcast })
            .map_err(|_| TransportError::Closed)
    }
}

impl P2pHandle {
    /// The addresses this node listens on, each ending with `/p2p/<node id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared.listen_addrs).clone()
    }

    /// The gadus peers currently up (identified and connected).
    pub fn peers(&self) -> Vec<PeerInfo> {
        lock(&self.shared.peers)
            .iter()
            .map(|(node, api)| PeerInfo { node: node.clone(), api: api.clone() })
            .collect()
    }

    /// Outbound frames dropped so far (queue overflow, refused by the receiver, peer without
    /// the protocol).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Broadcast frames published on gossipsub so far (the rest went point-to-point).
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Stops the swarm and closes every connection. Frames queued for connected peers get up
    /// to two seconds to be acknowledged first (so a `Goodbye` sent just before reaches its
    /// peers); the rest are discarded. Idempotent.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

// --------------------------------------------------------------------------------- driver

#[derive(Debug)]
struct Backoff {
    delay: Duration,
    next: Instant,
}

impl Backoff {
    fn new(now: Instant) -> Self {
        Backoff { delay: MIN_BACKOFF, next: now }
    }

    fn fail(&mut self, now: Instant) {
        self.next = now + self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    fn reset(&mut self, now: Instant) {
        self.delay = MIN_BACKOFF;
        self.next = now;
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }
}

/// A configured peer: its addresses are kept apart from the learned ones so they are always
/// tried, however many addresses the peer reports for itself.
struct BootPeer {
    addrs: Vec<Multiaddr>,
    backoff: Backoff,
}

struct PeerQueue {
    frames: VecDeque<Bytes>,
    in_flight: usize,
    backoff: Backoff,
}

// Lives for one loop iteration and is matched at once; boxing the swarm event would only add
// an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Step {
    Swarm(SwarmEvent<BehaviourEvent>),
    Command(Option<Command>),
    Permit(Option<mpsc::OwnedPermit<Inbound>>),
    Tick,
}

struct Driver {
    swarm: Swarm<Behaviour>,
    local_peer: PeerId,
    commands: mpsc::UnboundedReceiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    /// Events waiting for room in `inbound` (peer events are never dropped; messages are
    /// bounded by [`MAX_PENDING_INBOUND`]).
    pending: VecDeque<Inbound>,
    queues: HashMap<PeerId, PeerQueue>,
    in_flight: HashMap<OutboundRequestId, (PeerId, Bytes)>,
    /// Our own address book (libp2p drops addresses after one failed dial).
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// [`P2pConfig::learn_peer_addrs`].
    learn_peer_addrs: bool,
    dialing: HashSet<PeerId>,
    bootstrap: HashMap<PeerId, BootPeer>,
    /// Peers we announced with `PeerUp`.
    up: HashSet<PeerId>,
    /// The IP address of each connected peer's latest connection (what its advertised API
    /// URL is checked against).
    remote_ips: HashMap<PeerId, std::net::IpAddr>,
    last_published: Option<(u64, Instant)>,
    /// Set by a shutdown request: who waits, and when to stop flushing.
    closing: Option<(Vec<oneshot::Sender<()>>, Instant)>,
    topic: IdentTopic,
    codec: FrameCodec,
    shared: Arc<Shared>,
}

impl Driver {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The branches only produce a step; handling it needs `&mut self`, which the
            // futures borrow while they are alive.
            let step = tokio::select! {
                event = self.swarm.select_next_some() => Step::Swarm(event),
                cmd = self.commands.recv() => Step::Command(cmd),
                permit = self.inbound.clone().reserve_owned(), if !self.pending.is_empty() => {
                    Step::Permit(permit.ok())
                }
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Swarm(event) => self.on_swarm_event(event),
                Step::Command(Some(Command::Send { to, frame, broadcast })) => {
                    self.on_send(to, frame, broadcast);
                }
                Step::Command(Some(Command::Local(message))) => {
                    let from = self.local_peer.to_base58();
                    self.push_inbound(Inbound::Message { from, message }, false);
                }
                Step::Command(Some(Command::Shutdown(done))) => {
                    let deadline = Instant::now() + SHUTDOWN_GRACE;
                    let closing = self.closing.get_or_insert((Vec::new(), deadline));
                    closing.0.push(done);
                }
                // Every transport and handle is gone: nobody can send or stop us.
                Step::Command(None) => return,
                Step::Permit(Some(permit)) => {
                    if let Some(ev) = self.pending.pop_front() {
                        permit.send(ev);
                    }
                }
                // The node loop is gone; keep serving acks so peers do not retry forever.
                Step::Permit(None) => self.pending.clear(),
                Step::Tick => {
                    self.redial_bootstrap();
                    self.pump_all();
                }
            }
            if let Some((_, deadline)) = &self.closing
                && (self.flushed() || Instant::now() >= *deadline)
            {
                let waiting = self.closing.take().map(|(w, _)| w).unwrap_or_default();
                drop(self.swarm);
                for done in waiting {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Whether nothing is left to deliver to a connected peer (frames for unreachable peers
    /// would only hold a shutdown until its deadline).
    fn flushed(&self) -> bool {
        self.in_flight.is_empty()
            && self.queues.iter().all(|(p, q)| q.frames.is_empty() || !self.swarm.is_connected(p))
    }

    /// Queues an event for the node loop. Messages are refused (false) when the backlog is
    /// full; peer events always go through so the node loop's view stays consistent.
    fn push_inbound(&mut self, ev: Inbound, is_message: bool) -> bool {
        if is_message && self.pending.len() >= MAX_PENDING_INBOUND {
            return false;
        }
        if self.pending.is_empty() {
            match self.inbound.try_send(ev) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(ev)) => self.pending.push_back(ev),
                Err(mpsc::error::TrySendError::Closed(_)) => return true,
            }
        } else {
            self.pending.push_back(ev);
        }
        true
    }

    fn learn_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        // Our own /p2p suffix confuses dialing; store bare transport addresses.
        let addr = match split_p2p(&addr) {
            Some((p, bare)) if p == peer => bare,
            Some(_) => return,
            None => addr,
        };
        let list = self.addrs.entry(peer).or_default();
        if list.contains(&addr) {
            return;
        }
        if list.len() >= MAX_ADDRS_PER_PEER {
            list.remove(0);
        }
        list.push(addr);
    }

    fn dial(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) || self.dialing.contains(&peer) {
            return;
        }
        let mut addrs = self.addrs.get(&peer).cloned().unwrap_or_default();
        if let Some(b) = self.bootstrap.get(&peer) {
            addrs
                .extend(b.addrs.iter().filter(|a| !addrs.contains(a)).cloned().collect::<Vec<_>>());
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs);
        let opts =
            if self.learn_peer_addrs { opts.extend_addresses_through_behaviour() } else { opts };
        let opts = opts.condition(PeerCondition::DisconnectedAndNotDialing).build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(peer);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial not started");
                self.dial_failed(peer);
            }
        }
    }

    fn dial_failed(&mut self, peer: PeerId) {
        let now = Instant::now();
        self.dialing.remove(&peer);
        if let Some(b) = self.bootstrap.get_mut(&peer) {
            b.backoff.fail(now);
        }
        if let Some(q) = self.queues.get_mut(&peer) {
            q.backoff.fail(now);
        }
    }

    fn redial_bootstrap(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .bootstrap
            .iter()
            .filter(|(p, b)| {
                b.backoff.due(now) && !self.swarm.is_connected(p) && !self.dialing.contains(p)
            })
            .map(|(p, _)| *p)
            .collect();
        // `dialing` keeps a peer from being dialled twice; a failed dial backs it off.
        for peer in due {
            self.dial(peer);
        }
    }

    fn on_send(&mut self, to: PeerId, frame: Bytes, broadcast: bool) {
        if broadcast && self.publish(to, &frame) {
            return;
        }
        self.enqueue(to, frame);
        self.pump(to);
    }

    /// Publishes a broadcast frame on gossipsub when `to` will receive it there. Returns false
    /// when the frame must go point-to-point instead.
    fn publish(&mut self, to: PeerId, frame: &Bytes) -> bool {
        let hash = self.topic.hash();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut topic_peers = 0usize;
        let mut subscribed = false;
        for (p, topics) in gossipsub.all_peers() {
            if topics.contains(&&hash) {
                topic_peers += 1;
                subscribed |= *p == to;
            }
        }
        // A peer we are not connected to and have no address for cannot be reached directly,
        // but the mesh may relay to it (a compute node and an orchestrator that both only
        // know a bootstrap node). Heartbeats repeat, so trying the relay is enough.
        let unreachable = !self.swarm.is_connected(&to)
            && self.addrs.get(&to).is_none_or(|a| a.is_empty())
            && !self.dialing.contains(&to);
        if !(subscribed || (unreachable && topic_peers > 0)) {
            return false;
        }
        let mut h = DefaultHasher::new();
        frame.hash(&mut h);
        let digest = h.finish();
        let now = Instant::now();
        if let Some((last, at)) = self.last_published
            && last == digest
            && now.duration_since(at) < PUBLISH_DEDUP_WINDOW
        {
            return true;
        }
        match self.swarm.behaviour_mut().gossipsub.publish(hash, frame.to_vec()) {
            Ok(_) => {
                self.last_published = Some((digest, now));
                self.shared.published.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(gossipsub::PublishError::Duplicate) => true,
            Err(e) => {
                tracing::debug!(peer = %to, error = %e, "gossip publish failed; sending directly");
                false
            }
        }
    }

    fn enqueue(&mut self, to: PeerId, frame: Bytes) {
        let now = Instant::now();
        let q = self.queues.entry(to).or_insert_with(|| PeerQueue {
            frames: VecDeque::new(),
            in_flight: 0,
            backoff: Backoff::new(now),
        });
        if q.frames.len() >= MAX_QUEUED_PER_PEER {
            q.frames.pop_front();
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.frames.push_back(frame);
    }

    /// A failed frame goes back to the front (it is the oldest), unless the queue is full.
    fn requeue(&mut self, to: PeerId, frame: Bytes) {
        let now = Instant::now();
        let Some(q) = self.queues.get_mut(&to) else {
            self.enqueue(to, frame);
            return;
        };
        if q.frames.len() >= MAX_QUEUED_PER_PEER {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.frames.push_front(frame);
        }
        q.backoff.fail(now);
    }

    fn pump_all(&mut self) {
        let peers: Vec<PeerId> =
            self.queues.iter().filter(|(_, q)| !q.frames.is_empty()).map(|(p, _)| *p).collect();
        for p in peers {
            self.pump(p);
        }
        // Forget idle queues of peers that are gone, so the map does not grow without bound.
        self.queues.retain(|_, q| !q.frames.is_empty() || q.in_flight > 0);
    }

    fn pump(&mut self, peer: PeerId) {
        let now = Instant::now();
        let Some(q) = self.queues.get(&peer) else { return };
        if q.frames.is_empty() || !q.backoff.due(now) {
            return;
        }
        if !self.swarm.is_connected(&peer) {
            self.dial(peer);
            return;
        }
        loop {
            let Some(q) = self.queues.get_mut(&peer) else { return };
            if q.in_flight >= MAX_IN_FLIGHT_PER_PEER {
                return;
            }
            let Some(frame) = q.frames.pop_front() else { return };
            q.in_flight += 1;
            let id = self.swarm.behaviour_mut().rr.send_request(&peer, Frame(frame.clone()));
            self.in_flight.insert(id, (peer, frame));
        }
    }

    fn finish_request(&mut self, id: OutboundRequestId) -> Option<(PeerId, Bytes)> {
        let (peer, frame) = self.in_flight.remove(&id)?;
        if let Some(q) = self.queues.get_mut(&peer) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        Some((peer, frame))
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.local_peer));
                let mut addrs = lock(&self.shared.listen_addrs);
                if !addrs.contains(&full) {
                    addrs.push(full);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.local_peer));
                lock(&self.shared.listen_addrs).retain(|a| *a != full);
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                let now = Instant::now();
                self.dialing.remove(&peer_id);
                if let Some(ip) = multiaddr_ip(endpoint.get_remote_address()) {
                    self.remote_ips.insert(peer_id, ip);
                }
                if let ConnectedPoint::Dialer { address, .. } = endpoint {
                    self.learn_addr(peer_id, address);
                }
                if let Some(b) = self.bootstrap.get_mut(&peer_id) {
                    b.backoff.reset(now);
                }
                self.swarm.behaviour_mut().gossipsub.add_explicit_peer(&peer_id);
                if let Some(q) = self.queues.get_mut(&peer_id) {
                    q.backoff.reset(now);
                }
                self.pump(peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                // Gossipsub re-dials explicit peers on its own; our queues and bootstrap list
                // decide whom to re-dial, so it forgets them while they are away.
                self.swarm.behaviour_mut().gossipsub.remove_explicit_peer(&peer_id);
                self.remote_ips.remove(&peer_id);
                if self.up.remove(&peer_id) {
                    let node = peer_id.to_base58();
                    lock(&self.shared.peers).remove(&node);
                    self.push_inbound(Inbound::PeerDown { node }, false);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.dial_failed(peer);
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if self.learn_peer_addrs {
                    for a in info.listen_addrs {
                        self.learn_addr(peer_id, a);
                    }
                }
                if info.protocols.contains(&PROTOCOL) && self.up.insert(peer_id) {
                    let node = peer_id.to_base58();
                    let api = api_from_agent(&info.agent_version);
                    lock(&self.shared.peers).insert(node.clone(), api.clone());
                    let addr = self.remote_ips.get(&peer_id).copied();
                    self.push_inbound(Inbound::PeerUp { node, api, addr }, false);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.on_gossip(message);
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            BehaviourEvent::Rr(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let ack = self.on_request(peer, &request);
                        // Err only if the stream is already gone; the sender will retry.
                        let _ = self.swarm.behaviour_mut().rr.send_response(channel, ack);
                    }
                    request_response::Message::Response { request_id, response } => {
                        let Some((peer, frame)) = self.finish_request(request_id) else {
                            return;
                        };
                        match response {
                            Ack::Accepted => {
                                if let Some(q) = self.queues.get_mut(&peer) {
                                    q.backoff.reset(Instant::now());
                                }
                            }
                            Ack::Refused => {
                                tracing::warn!(%peer, "peer refused a frame; dropped");
                                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Ack::Busy => self.requeue(peer, frame),
                        }
                        self.pump(peer);
                    }
                }
            }
            BehaviourEvent::Rr(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                let Some((_, frame)) = self.finish_request(request_id) else { return };
                if matches!(error, request_response::OutboundFailure::UnsupportedProtocols) {
                    tracing::warn!(%peer, "peer does not speak {PROTOCOL}; frame dropped");
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!(%peer, %error, "request failed; will retry");
                    self.requeue(peer, frame);
                }
            }
            BehaviourEvent::Rr(request_response::Event::InboundFailure { peer, error, .. }) => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) if self.learn_peer_addrs => {
                for (peer, addr) in found {
                    self.learn_addr(peer, addr);
                    self.dial(peer);
                }
            }
            _ => {}
        }
    }

    /// Decides what to do with a point-to-point frame from `peer`.
    fn on_request(&mut self, peer: PeerId, frame: &Frame) -> Ack {
        let env = match self.codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed frame refused");
                return Ack::Refused;
            }
        };
        let from = peer.to_base58();
        if env.from != from || (env.to != self.local_peer.to_base58() && !env.to.is_empty()) {
            tracing::warn!(%peer, claimed = %env.from, to = %env.to, "misaddressed frame refused");
            return Ack::Refused;
        }
        if self.push_inbound(Inbound::Message { from, message: env.message }, true) {
            Ack::Accepted
        } else {
            Ack::Busy
        }
    }

    /// Validates and delivers a gossip message.
    fn on_gossip(&mut self, message: gossipsub::Message) -> MessageAcceptance {
        let Some(source) = message.source else {
            // Strict validation never yields an unsigned message; refuse rather than guess.
            return MessageAcceptance::Reject;
        };
        let env = match self.codec.decode(&Frame(Bytes::from(message.data))) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(%source, error = %e, "malformed gossip rejected");
                return MessageAcceptance::Reject;
            }
        };
        let from = source.to_base58();
        if env.from != from || !is_broadcast(&env.message) {
            tracing::warn!(%source, claimed = %env.from, kind = env.message.name(), "forged or misplaced gossip rejected");
            return MessageAcceptance::Reject;
        }
        // Valid for the network either way; only the addressee hands it to its node loop
        // (a heartbeat lists the executions held for one orchestrator).
        if env.to.is_empty() || env.to == self.local_peer.to_base58() {
            // A full backlog drops the message locally; heartbeats repeat.
            let _ = self.push_inbound(Inbound::Message { from, message: env.message }, true);
        }
        MessageAcceptance::Accept
    }
}
