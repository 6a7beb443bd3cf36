//! Layer 3: a deterministic two-peer simulation with a virtual clock. The
//! transport delivers bytes in order but in random fragments, after a random
//! latency, and may be cut at a random moment. Seeded, so every failure
//! replays.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::Config;
use peng3dnet_core::registry::RegistryAccess;
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Closed, Event, Initiator};
use peng3dnet_test_support::{config, registry, Chat, ClientConn, Conn, Numbered, BUF, CAP};
use std::collections::VecDeque;

/// splitmix64: a tiny deterministic generator for the simulation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One direction of the transport: chunks in order, each due at a time.
#[derive(Default)]
struct Pipe {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    last_due: Instant,
}

impl Pipe {
    fn send(&mut self, rng: &mut Rng, now: Instant, latency: Duration, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = 1 + rng.below(bytes.len() as u64) as usize;
            let jitter = Duration::from_micros(rng.below(latency.as_micros() / 2 + 1));
            // In order: never due before the chunk ahead of it.
            let due = (now + latency + jitter).max(self.last_due);
            self.last_due = due;
            self.chunks.push_back((due, bytes[..n].to_vec()));
            bytes = &bytes[n..];
        }
    }

    fn deliver<'a, G: RegistryAccess<CAP>>(
        &mut self,
        now: Instant,
        to: &mut Conn<'a, G>,
        on_event: &mut dyn FnMut(&mut Conn<'a, G>),
    ) {
        while let Some((due, chunk)) = self.chunks.front_mut() {
            if *due > now {
                return;
            }
            let n = to.handle_input(chunk);
            chunk.drain(..n);
            on_event(to);
            if chunk.is_empty() {
                self.chunks.pop_front();
            } else if n == 0 && !to.is_closed() {
                panic!("receiver made no progress on a chunk");
            }
        }
    }
}

#[derive(Default, Debug)]
struct Outcome {
    client_connected: bool,
    server_connected: bool,
    echoes: u32,
    client_closed: Option<(CloseReason, Initiator)>,
    server_closed: Option<(CloseReason, Initiator)>,
}

struct Scenario {
    seed: u64,
    latency: Duration,
    messages: u32,
    cut_at: Option<Instant>,
    timeout: Duration,
}

/// The server's application: echo every chat.
fn server_app(s: &mut Conn<'_>, now: Instant, out: &mut Outcome) {
    while let Some(ev) = s.poll(now) {
        match ev {
            Event::Connected => out.server_connected = true,
            Event::Packet(p) => {
                let msg = p.decode::<Chat>().expect("chat");
                let echo = Numbered {
                    seq: msg.seq,
                    text: "echo",
                };
                s.send::<Chat>(&echo).expect("echo fits");
            }
            Event::Closed(Closed { reason, initiator }) => {
                out.server_closed = Some((reason, initiator))
            }
            other => panic!("server: unexpected {other:?}"),
        }
    }
}

/// The client's application: check the echoes' order.
fn client_app(
    c: &mut ClientConn<'_>,
    now: Instant,
    out: &mut Outcome,
    expect_seq: &mut u32,
    seed: u64,
) {
    while let Some(ev) = c.poll(now) {
        match ev {
            Event::Connected => out.client_connected = true,
            Event::Packet(p) => {
                let seq = p.decode::<Chat>().expect("chat").seq;
                assert_eq!(seq, *expect_seq, "seed {seed}: echo out of order");
                *expect_seq += 1;
                out.echoes += 1;
            }
            Event::Closed(Closed { reason, initiator }) => {
                out.client_closed = Some((reason, initiator))
            }
            other => panic!("client: unexpected {other:?}"),
        }
    }
}

fn simulate(sc: &Scenario) -> Outcome {
    let mut rng = Rng(sc.seed);
    let cfg = Config {
        handshake_timeout: sc.timeout,
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    let mut now = Instant::ZERO;
    let mut server: Conn<'_> =
        Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], now).unwrap();
    let mut client: ClientConn<'_> = Conn::client(
        &cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "classic", now,
    )
    .unwrap();
    let (mut s2c, mut c2s) = (Pipe::default(), Pipe::default());
    let mut out = Outcome::default();
    let (mut next_seq, mut expect_seq) = (0u32, 0u32);
    let window = 1 + rng.below(16) as u32;
    let mut cut = false;

    for _ in 0..200_000 {
        // The transport may die.
        if !cut && sc.cut_at.is_some_and(|t| now >= t) {
            cut = true;
            server.handle_transport_closed();
            client.handle_transport_closed();
        }
        // Deliver what is due and run each side's application.
        if !cut {
            c2s.deliver(now, &mut server, &mut |s| server_app(s, now, &mut out));
        }
        server_app(&mut server, now, &mut out);
        if !cut {
            s2c.deliver(now, &mut client, &mut |c| {
                client_app(c, now, &mut out, &mut expect_seq, sc.seed)
            });
        }
        client_app(&mut client, now, &mut out, &mut expect_seq, sc.seed);
        // The client keeps up to `window` messages in flight.
        while client.is_connected() && next_seq < sc.messages && next_seq - expect_seq < window {
            let text = "m".repeat(rng.below(64) as usize);
            client
                .send::<Chat>(&Numbered {
                    seq: next_seq,
                    text: &text,
                })
                .expect("fits");
            next_seq += 1;
        }
        if client.is_connected() && expect_seq == sc.messages {
            client.close(CloseReason::UserRequest);
        }
        // Timers.
        if server.poll_timeout().is_some_and(|t| now >= t) {
            server.handle_timeout(now);
        }
        if client.poll_timeout().is_some_and(|t| now >= t) {
            client.handle_timeout(now);
        }
        server_app(&mut server, now, &mut out);
        client_app(&mut client, now, &mut out, &mut expect_seq, sc.seed);
        // Bytes onto the wire.
        if !cut {
            let bytes = server.poll_transmit().to_vec();
            server.transmitted(bytes.len());
            s2c.send(&mut rng, now, sc.latency, &bytes);
            let bytes = client.poll_transmit().to_vec();
            client.transmitted(bytes.len());
            c2s.send(&mut rng, now, sc.latency, &bytes);
        }
        if out.client_closed.is_some() && out.server_closed.is_some() {
            return out;
        }
        now = now + Duration::from_micros(250);
    }
    panic!("seed {}: did not finish: {out:?}", sc.seed);
}

#[test]
fn echoes_arrive_in_order_through_fragmenting_laggy_transport() {
    for seed in 0..60 {
        let mut rng = Rng(seed ^ 0xabc);
        let sc = Scenario {
            seed,
            latency: Duration::from_micros(100 + rng.below(20_000)),
            messages: 50 + rng.below(150) as u32,
            cut_at: None,
            timeout: Duration::from_secs(10),
        };
        let out = simulate(&sc);
        assert!(
            out.client_connected && out.server_connected,
            "seed {seed}: {out:?}"
        );
        assert_eq!(out.echoes, sc.messages, "seed {seed}");
        assert_eq!(
            out.client_closed,
            Some((CloseReason::UserRequest, Initiator::Local))
        );
        assert_eq!(
            out.server_closed,
            Some((CloseReason::UserRequest, Initiator::Peer))
        );
    }
}

#[test]
fn a_slow_link_ends_in_handshake_timeouts() {
    for seed in 0..20 {
        let sc = Scenario {
            seed,
            latency: Duration::from_millis(400),
            messages: 1,
            cut_at: None,
            timeout: Duration::from_millis(500),
        };
        let out = simulate(&sc);
        assert!(!out.client_connected || !out.server_connected);
        assert_eq!(
            out.server_closed.unwrap().0,
            CloseReason::HandshakeTimeout,
            "seed {seed}"
        );
        // The client either timed out itself or heard the server's reason.
        assert_eq!(
            out.client_closed.unwrap().0,
            CloseReason::HandshakeTimeout,
            "seed {seed}"
        );
    }
}

#[test]
fn a_cut_transport_closes_both_sides_with_socketclose() {
    for seed in 0..60 {
        let mut rng = Rng(seed ^ 0x5eed);
        let sc = Scenario {
            seed,
            latency: Duration::from_micros(500 + rng.below(5_000)),
            messages: 10_000,
            cut_at: Some(Instant::from_micros(rng.below(200_000))),
            timeout: Duration::from_secs(10),
        };
        let out = simulate(&sc);
        assert_eq!(
            out.client_closed,
            Some((CloseReason::SocketClose, Initiator::Transport)),
            "seed {seed}"
        );
        assert_eq!(
            out.server_closed,
            Some((CloseReason::SocketClose, Initiator::Transport)),
            "seed {seed}"
        );
        assert!(out.echoes < sc.messages);
    }
}
