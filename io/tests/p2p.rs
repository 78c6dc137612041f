//! The libp2p transport with real swarms on 127.0.0.1: discovery and PeerUp, point-to-point
//! delivery, heartbeat gossip, reconnection after a restart, identity persistence, and the
//! frame codec's handling of hostile input.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, StreamExt};
use gadus_core::protocol::{
    Envelope, ExecRef, Heartbeat, Message, NodeClock, PROTOCOL_VERSION, WireResources, encode_frame,
};
use gadus_io::transport::p2p::{
    Ack, Frame, FrameCodec, P2pConfig, P2pError, P2pHandle, P2pTransport, PROTOCOL,
    load_or_create_key, peer_id_from_key_file,
};
use gadus_io::transport::{Inbound, Transport};
use libp2p::Multiaddr;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    transport: Arc<P2pTransport>,
    inbound: Receiver<Inbound>,
    handle: P2pHandle,
}

fn config(dir: &Path, name: &str, listen: &str, bootstrap: Vec<Multiaddr>) -> P2pConfig {
    let mut cfg = P2pConfig::new(
        vec![listen.parse().expect("listen address")],
        dir.join(format!("{name}.key")),
    );
    cfg.bootstrap = bootstrap;
    cfg.api_url = Some(format!("http://127.0.0.1:1/{name}"));
    cfg
}

async fn start(cfg: P2pConfig) -> Node {
    let (transport, inbound, handle) = P2pTransport::start(cfg).await.expect("transport starts");
    Node { transport, inbound, handle }
}

/// Waits for the first event matching `pred`, skipping others.
async fn expect(
    rx: &mut Receiver<Inbound>,
    what: &str,
    pred: impl Fn(&Inbound) -> bool,
) -> Inbound {
    let found = timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("inbound channel closed while waiting for {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn peer_up(ev: &Inbound, node: &str) -> bool {
    matches!(ev, Inbound::PeerUp { node: n, .. } if n == node)
}

fn ask_for_bid(attempt: u64) -> Message {
    Message::AskForBid {
        exec: ExecRef { execution_id: "e-1".into(), job_id: "j-1".into(), attempt },
        job_json: "{}".into(),
        partition: (0, 1),
        needs_approval: true,
    }
}

fn heartbeat(seq: u64) -> Message {
    Message::Heartbeat {
        heartbeat: Heartbeat {
            available: WireResources { cpu_milli: 2000, memory: 1 << 30, disk: 0, gpu: 0 },
            running: 1,
            ..Default::default()
        },
        clock: NodeClock { incarnation: 1, seq },
    }
}

/// A and B with B bootstrapped to A, both having seen the other come up.
async fn pair(dir: &Path) -> (Node, Node) {
    let mut a = start(config(dir, "a", "/ip4/127.0.0.1/tcp/0", vec![])).await;
    let boot = a.handle.listen_addrs();
    assert!(!boot.is_empty(), "A listens");
    let mut b = start(config(dir, "b", "/ip4/127.0.0.1/tcp/0", boot)).await;
    let (a_id, b_id) = (a.transport.local_id().to_string(), b.transport.local_id().to_string());
    let up = expect(&mut a.inbound, "PeerUp(B) at A", |e| peer_up(e, &b_id)).await;
    assert_eq!(
        up,
        Inbound::PeerUp {
            node: b_id.clone(),
            api: Some("http://127.0.0.1:1/b".into()),
            addr: Some([127, 0, 0, 1].into())
        }
    );
    let up = expect(&mut b.inbound, "PeerUp(A) at B", |e| peer_up(e, &a_id)).await;
    assert_eq!(
        up,
        Inbound::PeerUp {
            node: a_id.clone(),
            api: Some("http://127.0.0.1:1/a".into()),
            addr: Some([127, 0, 0, 1].into())
        }
    );
    (a, b)
}

#[tokio::test]
async fn peers_come_up_and_messages_arrive_from_the_authenticated_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(dir.path()).await;
    let a_id = a.transport.local_id().to_string();
    assert_eq!(a.handle.peers().len(), 1);
    assert_eq!(a.handle.peers()[0].node, b.transport.local_id());

    a.transport.send(b.transport.local_id(), ask_for_bid(7)).unwrap();
    let got =
        expect(&mut b.inbound, "AskForBid at B", |e| matches!(e, Inbound::Message { .. })).await;
    assert_eq!(got, Inbound::Message { from: a_id, message: ask_for_bid(7) });

    // A message to oneself is delivered locally (a node is often orchestrator and compute).
    let b_id = b.transport.local_id().to_string();
    b.transport.send(&b_id, ask_for_bid(8)).unwrap();
    let got =
        expect(&mut b.inbound, "self message", |e| matches!(e, Inbound::Message { .. })).await;
    assert_eq!(got, Inbound::Message { from: b_id, message: ask_for_bid(8) });

    // Not a peer ID: refused synchronously.
    assert!(a.transport.send("not-a-peer", ask_for_bid(9)).is_err());
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn heartbeats_travel_on_gossip_signed_by_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path()).await;
    let (a_id, b_id) = (a.transport.local_id().to_string(), b.transport.local_id().to_string());

    // Until B has seen A's subscription a heartbeat goes point-to-point; keep sending until
    // one is published on the topic.
    let mut seq = 0;
    timeout(WAIT, async {
        while b.handle.published() == 0 {
            seq += 1;
            b.transport.send(&a_id, heartbeat(seq)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("B publishes a heartbeat on gossipsub");
    let published = b.handle.published();

    let marker = 1_000;
    b.transport.send(&a_id, heartbeat(marker)).unwrap();
    let got = expect(&mut a.inbound, "gossiped heartbeat at A", |e| {
        matches!(e, Inbound::Message { message: Message::Heartbeat { clock, .. }, .. } if clock.seq == marker)
    })
    .await;
    assert_eq!(got, Inbound::Message { from: b_id, message: heartbeat(marker) });
    assert!(b.handle.published() > published, "the marker went out on gossipsub");
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn queued_messages_reach_a_peer_restarted_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path()).await;
    let b_id = b.transport.local_id().to_string();
    let b_addr = b.handle.listen_addrs()[0].clone();
    let port = b_addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();

    b.handle.shutdown().await;
    drop(b);
    expect(
        &mut a.inbound,
        "PeerDown(B) at A",
        |e| matches!(e, Inbound::PeerDown { node } if *node == b_id),
    )
    .await;

    // Queued while B is away; A's dials fail and back off.
    a.transport.send(&b_id, ask_for_bid(42)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // B comes back without bootstrap peers: A has to re-dial it from the address it learned
    // through identify (libp2p alone would have forgotten it after the failed dials).
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut b = start(config(dir.path(), "b", &listen, vec![])).await;
    assert_eq!(b.transport.local_id(), b_id, "same key file, same node ID");
    let got = expect(&mut b.inbound, "queued AskForBid at restarted B", |e| {
        matches!(e, Inbound::Message { .. })
    })
    .await;
    assert_eq!(
        got,
        Inbound::Message { from: a.transport.local_id().to_string(), message: ask_for_bid(42) }
    );
    assert_eq!(a.handle.dropped(), 0);
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn the_key_file_fixes_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/node.key");
    let id = peer_id_from_key_file(&path).unwrap();
    assert_eq!(peer_id_from_key_file(&path).unwrap(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut cfg = P2pConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], path.clone());
    cfg.api_url = None;
    let node = start(cfg).await;
    assert_eq!(node.transport.local_id(), id);
    assert!(node.handle.listen_addrs()[0].to_string().ends_with(&format!("/p2p/{id}")));
    node.handle.shutdown().await;

    std::fs::write(&path, b"not a key").unwrap();
    assert!(matches!(load_or_create_key(&path), Err(P2pError::KeyFileInvalid { .. })));

    // A bootstrap entry without a peer ID is the caller's mistake.
    let mut cfg = P2pConfig::new(vec![], dir.path().join("other.key"));
    cfg.bootstrap = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
    assert!(matches!(P2pTransport::start(cfg).await, Err(P2pError::InvalidConfig(_))));
}

/// Counts the bytes a reader hands out.
struct Counting<'a> {
    data: &'a [u8],
    read: usize,
}

impl AsyncRead for Counting<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.data.len() - self.read);
        let start = self.read;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.read += n;
        Poll::Ready(Ok(n))
    }
}

#[tokio::test]
async fn the_codec_refuses_hostile_frames() {
    let codec = FrameCodec::new(1024);

    // A 4 GiB claim is refused after reading the prefix alone: nothing was allocated for it.
    let mut hostile = vec![0xff, 0xff, 0xff, 0xff];
    hostile.extend_from_slice(&[0u8; 64]);
    let mut r = Counting { data: &hostile, read: 0 };
    let err = codec.read_frame(&mut r).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(r.read, 4);

    // Just over the configured limit is refused too.
    let mut over = 1025u32.to_be_bytes().to_vec();
    over.extend_from_slice(&[0u8; 1025]);
    assert!(codec.read_frame(&mut Counting { data: &over, read: 0 }).await.is_err());

    // A short body is an error, not a hang or a partial frame.
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(&[1u8; 10]);
    let err = codec.read_frame(&mut Counting { data: &short, read: 0 }).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

    // Garbage inside a well-formed length: read, then refused by the decoder.
    let mut garbage = 10u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xfd; 10]);
    let frame = codec.read_frame(&mut Counting { data: &garbage, read: 0 }).await.unwrap();
    assert!(codec.decode(&frame).is_err());

    // A real frame round-trips.
    let env = Envelope {
        version: PROTOCOL_VERSION,
        from: "a".into(),
        to: "b".into(),
        message: ask_for_bid(1),
    };
    let bytes = encode_frame(&env).unwrap();
    let frame = codec.read_frame(&mut Counting { data: &bytes, read: 0 }).await.unwrap();
    assert_eq!(codec.decode(&frame).unwrap(), env);
}

/// A raw libp2p peer speaking `/gadus/proto/1` sends a garbage frame and a frame claiming
/// another sender: the transport answers `Refused` to both (so they are not retried) and
/// delivers neither.
#[tokio::test]
async fn malformed_and_forged_frames_are_refused_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(config(dir.path(), "a", "/ip4/127.0.0.1/tcp/0", vec![])).await;
    let a_addr = a.handle.listen_addrs()[0].clone();
    let a_peer = a.transport.peer_id();

    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                FrameCodec::new(1 << 20),
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    raw.dial(a_addr).unwrap();

    let mut garbage = 10u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xfd; 10]);
    let forged = encode_frame(&Envelope {
        version: PROTOCOL_VERSION,
        from: "somebody-else".into(),
        to: a.transport.local_id().to_string(),
        message: ask_for_bid(1),
    })
    .unwrap();
    raw.behaviour_mut().send_request(&a_peer, Frame(garbage.into()));
    raw.behaviour_mut().send_request(&a_peer, Frame(forged.into()));

    let acks = timeout(WAIT, async {
        let mut acks = Vec::new();
        while acks.len() < 2 {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) = raw.select_next_some().await
            {
                acks.push(response);
            }
        }
        acks
    })
    .await
    .expect("two acks");
    assert_eq!(acks, vec![Ack::Refused, Ack::Refused]);
    assert!(a.inbound.try_recv().is_err(), "nothing delivered");
    a.handle.shutdown().await;
}

/// B and C only know the hub A. A heartbeat from B addressed to C is relayed by A's gossip and
/// delivered at C (from B); A forwards it but does not hand it to its own node loop, because a
/// heartbeat lists the executions held for one orchestrator.
#[tokio::test]
async fn gossip_is_relayed_and_delivered_only_to_its_addressee() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(config(dir.path(), "a", "/ip4/127.0.0.1/tcp/0", vec![])).await;
    let boot = a.handle.listen_addrs();
    let b = start(config(dir.path(), "b", "/ip4/127.0.0.1/tcp/0", boot.clone())).await;
    let mut c = start(config(dir.path(), "c", "/ip4/127.0.0.1/tcp/0", boot)).await;
    let (b_id, c_id) = (b.transport.local_id().to_string(), c.transport.local_id().to_string());
    expect(&mut a.inbound, "PeerUp(B) at A", |e| peer_up(e, &b_id)).await;
    expect(&mut a.inbound, "PeerUp(C) at A", |e| peer_up(e, &c_id)).await;

    let mut seq = 0;
    let got = timeout(WAIT, async {
        loop {
            seq += 1;
            b.transport.send(&c_id, heartbeat(seq)).unwrap();
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    ev = c.inbound.recv() => match ev {
                        Some(ev @ Inbound::Message { .. }) => return ev,
                        Some(_) => {}
                        None => panic!("C's inbound closed"),
                    },
                    _ = &mut wait => break,
                }
            }
        }
    })
    .await
    .expect("C receives B's heartbeat through A");
    assert!(
        matches!(&got, Inbound::Message { from, message: Message::Heartbeat { .. } } if *from == b_id),
        "{got:?}"
    );
    assert!(b.handle.published() > 0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(ev) = a.inbound.try_recv() {
        assert!(!matches!(ev, Inbound::Message { .. }), "A delivered C's heartbeat: {ev:?}");
    }
    for n in [a, b, c] {
        n.handle.shutdown().await;
    }
}

/// A raw gossipsub peer publishes garbage, a heartbeat claiming another sender, a bid (not a
/// broadcast type), and finally a valid heartbeat: only the last reaches A's node loop, with
/// the signer as `from`.
#[tokio::test]
async fn invalid_gossip_is_rejected_and_valid_gossip_delivered() {
    use libp2p::gossipsub;
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(config(dir.path(), "a", "/ip4/127.0.0.1/tcp/0", vec![])).await;
    let a_id = a.transport.local_id().to_string();

    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(100))
                .build()
                .unwrap();
            gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
            .unwrap()
        })
        .unwrap()
        .build();
    let topic = gossipsub::IdentTopic::new(gadus_io::transport::p2p::NODES_TOPIC);
    raw.behaviour_mut().subscribe(&topic).unwrap();
    raw.dial(a.handle.listen_addrs()[0].clone()).unwrap();
    let raw_id = raw.local_peer_id().to_base58();

    let frame = |from: &str, message: Message| {
        encode_frame(&Envelope {
            version: PROTOCOL_VERSION,
            from: from.into(),
            to: a_id.clone(),
            message,
        })
        .unwrap()
    };
    let mut payloads = vec![
        vec![0, 0, 0, 3, 0xfd, 0xfd, 0xfd],
        frame("somebody-else", heartbeat(1)),
        frame(&raw_id, ask_for_bid(1)),
        frame(&raw_id, heartbeat(2)),
    ]
    .into_iter();

    // Publish each payload once A's subscription is known, driving the raw swarm meanwhile.
    let got = timeout(WAIT, async {
        let mut next = payloads.next();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = raw.select_next_some() => {}
                _ = tick.tick() => {
                    if let Some(p) = next.clone() {
                        match raw.behaviour_mut().publish(topic.clone(), p) {
                            Ok(_) => next = payloads.next(),
                            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                            Err(e) => panic!("publish: {e}"),
                        }
                    }
                }
                ev = a.inbound.recv() => match ev {
                    Some(ev @ Inbound::Message { .. }) => return ev,
                    Some(_) => {}
                    None => panic!("A's inbound closed"),
                },
            }
        }
    })
    .await
    .expect("the valid heartbeat arrives");
    assert_eq!(got, Inbound::Message { from: raw_id, message: heartbeat(2) });
    a.handle.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_peer_queue_drops_its_oldest_frames_beyond_the_bound() {
    use gadus_io::transport::p2p::MAX_QUEUED_PER_PEER;
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), "a", "/ip4/127.0.0.1/tcp/0", vec![])).await;
    let nowhere = libp2p::PeerId::random().to_base58();
    for i in 0..MAX_QUEUED_PER_PEER + 5 {
        a.transport.send(&nowhere, ask_for_bid(i as u64)).unwrap();
    }
    timeout(WAIT, async {
        while a.handle.dropped() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("five frames dropped");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.handle.dropped(), 5);
    // Nothing can be delivered; shutdown does not wait for an unreachable peer.
    timeout(Duration::from_secs(1), a.handle.shutdown()).await.expect("prompt shutdown");
}

/// B keeps its bootstrap peer connected: when A restarts (same key, same port), B re-dials it
/// and both see each other come up again.
#[tokio::test]
async fn a_restarted_bootstrap_peer_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(dir.path()).await;
    let a_id = a.transport.local_id().to_string();
    let listen = a.handle.listen_addrs()[0].to_string();
    let listen = listen.split("/p2p/").next().unwrap().to_string();
    a.handle.shutdown().await;
    drop(a);
    expect(
        &mut b.inbound,
        "PeerDown(A) at B",
        |e| matches!(e, Inbound::PeerDown { node } if *node == a_id),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut a = start(config(dir.path(), "a", &listen, vec![])).await;
    let b_id = b.transport.local_id().to_string();
    expect(&mut b.inbound, "PeerUp(A) again at B", |e| peer_up(e, &a_id)).await;
    expect(&mut a.inbound, "PeerUp(B) at restarted A", |e| peer_up(e, &b_id)).await;
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

/// A `Goodbye` sent right before shutdown still reaches the peer: shutdown flushes the queues
/// of connected peers first.
#[tokio::test]
async fn shutdown_flushes_a_last_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(dir.path()).await;
    let goodbye = Message::Goodbye { clock: NodeClock { incarnation: 1, seq: 99 } };
    a.transport.send(b.transport.local_id(), goodbye.clone()).unwrap();
    a.handle.shutdown().await;
    let got =
        expect(&mut b.inbound, "Goodbye at B", |e| matches!(e, Inbound::Message { .. })).await;
    assert_eq!(
        got,
        Inbound::Message { from: a.transport.local_id().to_string(), message: goodbye }
    );
    // Sending after shutdown is refused, not silently queued.
    assert!(a.transport.send(b.transport.local_id(), ask_for_bid(1)).is_err());
    b.handle.shutdown().await;
}
