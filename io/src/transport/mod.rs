//! How nodes exchange the core's protocol messages.
//!
//! The node loop sees a [`Transport`]: it sends [`Message`]s to peers by node ID and receives
//! [`Inbound`] events (messages, and peers appearing or leaving) on a channel. Implementations:
//! in-process (a single `gadus serve` talks to itself without a network), libp2p (a cluster),
//! and the simulation's own transport over turmoil TCP. Every implementation carries frames
//! encoded with [`gadus_core::protocol::encode_frame`] (bincode under a byte limit inside a
//! length-checked frame) when bytes cross a process boundary.
//!
//! Delivery is best effort: the protocol tolerates loss, duplication and reordering
//! (compute nodes re-send outcomes until acknowledged and list what they hold in heartbeats,
//! which the orchestrator reconciles). Implementations may retry, but must never block the
//! caller for long: `send` enqueues.

use gadus_core::protocol::{Message, NodeId};

pub mod p2p;

/// Something that happened on the transport.
// A message is moved once through a channel; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// A message from a peer.
    Message {
        /// The sender's node ID (authenticated by the transport when it can).
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// A peer became reachable; `api` is its HTTP API base URL when known.
    PeerUp {
        /// Node ID.
        node: NodeId,
        /// e.g. `http://127.0.0.1:1234` (as the peer claims it: vet before use).
        api: Option<String>,
        /// The IP address the peer's connection comes from, when known.
        addr: Option<std::net::IpAddr>,
    },
    /// A peer became unreachable.
    PeerDown {
        /// Node ID.
        node: NodeId,
    },
}

/// Why a send failed (the message is dropped; the protocol recovers).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No route to that node (unknown or disconnected).
    #[error("no route to node {0}")]
    Unreachable(NodeId),
    /// The message could not be encoded within the frame limit.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// The transport is shutting down.
    #[error("transport closed")]
    Closed,
}

/// Sends protocol messages to peers.
pub trait Transport: Send + Sync {
    /// This node's ID (derived from its identity key for libp2p).
    fn local_id(&self) -> &str;

    /// Enqueues `message` for `to`. Never blocks for long.
    fn send(&self, to: &str, message: Message) -> Result<(), TransportError>;
}
