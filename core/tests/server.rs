//! The core's sans-IO server (`peng3dnet_core::server`): admission and
//! refusal, generational ids, the one send rule, broadcast, the timer table
//! (handshake, write stall, shutdown grace), back-pressure, close reports.
//! Everything runs over in-memory byte pipes with a virtual clock.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::registry::Registry;
use peng3dnet_core::server::{ClientId, Refused, Server, ServerOptions, ServerSlot, Slot, Storage};
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Closed, Initiator};
use peng3dnet_test_support::{
    config, deliver, drain, encode, record, registry, take_tx, Chat, ClientConn, Numbered, Rec,
    ToServer, BUF, CAP, T0,
};

type Buf = [u8; BUF];
type Slots<'a, const K: usize> = [ServerSlot<'a, Postcard, Buf, Buf, CAP>; K];
type TestServer<'a, S> = Server<'a, Postcard, Buf, Buf, CAP, S>;

fn slots<'a, const K: usize>() -> Slots<'a, K> {
    [const { Slot::EMPTY }; K]
}

fn options(max_clients: usize) -> ServerOptions {
    ServerOptions {
        max_clients,
        ..ServerOptions::new()
    }
}

/// Moves bytes both ways between the server's client `id` and `client`
/// until both are quiet; returns what each side saw.
fn exchange<'a, S: Storage<ServerSlot<'a, Postcard, Buf, Buf, CAP>>>(
    server: &mut TestServer<'a, S>,
    id: ClientId,
    client: &mut ClientConn<'_>,
    now: Instant,
) -> (Vec<Rec>, Vec<Rec>) {
    let (mut se, mut ce) = (Vec::new(), Vec::new());
    for _ in 0..32 {
        let to_c = server.poll_transmit(id).to_vec();
        server.transmitted(id, to_c.len(), now);
        let to_s = take_tx(client);
        if to_c.is_empty() && to_s.is_empty() {
            while let Some(e) = server.poll(id, now) {
                se.push(record(e));
            }
            return (se, ce);
        }
        ce.extend(deliver(client, &to_c, &[], now));
        let mut fed = 0;
        for _ in 0..32 {
            fed += server.handle_input(id, &to_s[fed..]);
            while let Some(e) = server.poll(id, now) {
                se.push(record(e));
            }
            if fed == to_s.len() {
                break;
            }
        }
    }
    panic!("no quiet after 32 rounds");
}

fn client<'a>(cfg: &'a peng3dnet_core::Config<'a>, reg: &'a mut Registry<CAP>) -> ClientConn<'a> {
    ClientConn::client(cfg, reg, Postcard, [0; BUF], [0; BUF], "classic", T0).unwrap()
}

#[test]
fn refuses_when_full_and_broadcasts_with_exceptions() {
    let cfg = config();
    let sreg = registry();
    let mut cregs: Vec<Registry<CAP>> = (0..3).map(|_| registry()).collect();
    let mut clients: Vec<ClientConn<'_>> = cregs.iter_mut().map(|r| client(&cfg, r)).collect();
    let mut server = Server::new(&cfg, &sreg, Postcard, options(2), slots::<4>());
    let ids: Vec<ClientId> = (0..2)
        .map(|_| server.accept([0; BUF], [0; BUF], T0).unwrap())
        .collect();
    assert_eq!(
        server.accept([0; BUF], [0; BUF], T0),
        Err(Refused::Full),
        "max_clients holds below the storage's 4 slots"
    );
    assert_eq!(server.stats().refused, 1);
    // The transport tells the refused client why.
    let mut out = [0u8; 128];
    let n = server.refusal(Refused::Full, &mut out).unwrap();
    clients[2].handle_input(&out[..n]);
    assert_eq!(
        drain(&mut clients[2], T0),
        [Rec::Closed(CloseReason::ServerFull, Initiator::Peer)]
    );
    // Connect the two admitted clients.
    for (i, id) in ids.iter().enumerate() {
        let (se, ce) = exchange(&mut server, *id, &mut clients[i], T0);
        assert_eq!((se, ce), (vec![Rec::Connected], vec![Rec::Connected]));
    }
    assert_eq!(server.stats().handshakes, 2);
    assert_eq!(server.connected(), 2);
    let mut scratch = [0u8; 256];
    let msg = Numbered {
        seq: 5,
        text: "all",
    };
    let report = server
        .broadcast::<Chat>(&msg, &mut scratch, &ids[..1])
        .unwrap();
    assert_eq!((report.sent, report.excepted, report.failed), (1, 1, 0));
    for (i, id) in ids.iter().enumerate() {
        let (_, ce) = exchange(&mut server, *id, &mut clients[i], T0);
        assert_eq!(ce.len(), i, "client {i}: {ce:?}");
    }
    // A rule that refuses on some clients is reported, not fatal.
    let report = server.broadcast::<ToServer>(&1, &mut scratch, &[]).unwrap();
    assert_eq!(report.sent, 0);
    assert!(report.first_error.is_some());
    assert_eq!(server.len(), 2, "nobody was closed");
    // A scratch buffer too small for the message is the sender's error.
    let mut tiny = [0u8; 2];
    assert!(matches!(
        server.broadcast::<Chat>(&msg, &mut tiny, &[]),
        Err(SendError::TooLarge { .. })
    ));
}

#[test]
fn ids_are_never_reused_and_a_finished_client_gives_its_buffers_back() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, options(1), slots::<1>());
    let first = server.accept([1; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, first, &mut c, T0);
    assert!(server.close(first, CloseReason::UserRequest));
    assert!(
        !server.close(first, CloseReason::UserRequest),
        "closed once"
    );
    let (se, ce) = exchange(&mut server, first, &mut c, T0);
    assert_eq!(
        se,
        [Rec::Closed(CloseReason::UserRequest, Initiator::Local)]
    );
    assert_eq!(ce, [Rec::Closed(CloseReason::UserRequest, Initiator::Peer)]);
    let (done, (rx, _tx)) = server.take_finished(first).expect("finished");
    assert_eq!(
        done,
        Closed {
            reason: CloseReason::UserRequest,
            initiator: Initiator::Local
        }
    );
    assert_eq!(rx.len(), BUF, "the receive buffer came back");
    assert!(server.take_finished(first).is_none(), "reported once");
    assert!(server.is_empty());
    // The slot is reused under a new id; the old id reaches nobody.
    let second = server.accept([0; BUF], [0; BUF], T0).unwrap();
    assert_eq!(second.slot(), first.slot());
    assert_ne!(second, first);
    assert!(server.connection(first).is_none());
    assert!(!server.close(first, CloseReason::UserRequest));
    assert_eq!(
        server.send_encoded(first, 64, b""),
        Err(SendError::Closed),
        "a dead id"
    );
    assert!(server.connection(second).is_some());
}

#[test]
fn a_send_that_does_not_fit_closes_the_client_and_one_that_never_fits_does_not() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, options(1), slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    let chat = sreg.id_of::<Chat>().unwrap();
    // Larger than the whole transmit queue: refused, nothing else happens.
    let huge = vec![0u8; BUF];
    assert!(matches!(
        server.send_encoded(id, chat, &huge),
        Err(SendError::TooLarge { .. })
    ));
    assert!(server.is_connected(id), "TooLarge closes nothing");
    // Fill the queue without letting the client read: the send that does
    // not fit closes the client with writequeuefull.
    let body = encode(
        &Postcard,
        &Numbered {
            seq: 1,
            text: &"x".repeat(500),
        },
    );
    let mut sent = 0;
    let err = loop {
        match server.send_encoded(id, chat, &body) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "the queue never filled");
    };
    assert!(matches!(err, SendError::WouldBlock { .. }), "{err:?}");
    assert!(sent > 0);
    assert!(!server.is_connected(id));
    let (se, ce) = exchange(&mut server, id, &mut c, T0);
    assert_eq!(
        se,
        [Rec::Closed(CloseReason::WriteQueueFull, Initiator::Local)]
    );
    // The client still gets everything queued before, then the reason.
    assert_eq!(ce.len(), sent + 1);
    assert_eq!(
        ce.last(),
        Some(&Rec::Closed(CloseReason::WriteQueueFull, Initiator::Peer))
    );
}

#[test]
fn the_timer_table_fires_handshakes_in_order_and_handshakes_done_stop_theirs() {
    let cfg = config(); // handshake timeout: config().handshake_timeout
    let timeout = cfg.handshake_timeout;
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, options(8), slots::<8>());
    let t = |ms| Instant::from_millis(ms);
    let a = server.accept([0; BUF], [0; BUF], t(0)).unwrap();
    let b = server.accept([0; BUF], [0; BUF], t(10)).unwrap();
    let d = server.accept([0; BUF], [0; BUF], t(20)).unwrap();
    assert_eq!(server.poll_timeout(), Some(t(0) + timeout));
    // `b` completes its handshake: its timer is gone.
    exchange(&mut server, b, &mut c, t(10));
    assert!(server.is_connected(b));
    assert_eq!(
        server.handle_timeout(Instant::from_micros(timeout.as_micros() - 1)),
        None
    );
    let late = t(30) + timeout;
    let mut fired = Vec::new();
    while let Some(id) = server.handle_timeout(late) {
        fired.push(id);
        assert!(fired.len() <= 3);
    }
    assert_eq!(fired, [a, d], "in deadline order, b not at all");
    for id in [a, d] {
        let events: Vec<Rec> = std::iter::from_fn(|| server.poll(id, late).map(record)).collect();
        assert_eq!(
            events,
            [Rec::Closed(CloseReason::HandshakeTimeout, Initiator::Local)]
        );
    }
    assert!(server.is_connected(b));
    assert_eq!(
        server.poll_timeout(),
        Some(t(0) + ServerOptions::new().write_stall_timeout),
        "nothing of a's was ever written: its write-stall timer runs from its accept"
    );
}

#[test]
fn a_client_that_takes_nothing_is_dropped_after_the_write_stall_timeout() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let stall = Duration::from_secs(3);
    let opts = ServerOptions {
        write_stall_timeout: stall,
        ..options(2)
    };
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<2>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    let chat = sreg.id_of::<Chat>().unwrap();
    let body = encode(&Postcard, &Numbered { seq: 1, text: "hi" });
    let t1 = Instant::from_millis(1_000);
    server.send_encoded(id, chat, &body).unwrap();
    // A send carries no time: the timer starts at the next call that does
    // (it is due at once, so that an adapter asks).
    assert_eq!(server.poll_timeout(), Some(T0));
    assert_eq!(server.handle_timeout(t1), None);
    assert_eq!(server.poll_timeout(), Some(t1 + stall));
    // Progress restarts the timer.
    let t2 = Instant::from_millis(2_000);
    server.transmitted(id, 1, t2);
    assert_eq!(server.poll_timeout(), Some(t2 + stall));
    assert_eq!(server.handle_timeout(t1 + stall), None);
    // No progress for the whole timeout: dropped, not told.
    assert_eq!(server.handle_timeout(t2 + stall), Some(id));
    assert!(server.is_abandoned(id));
    assert!(
        server.poll_transmit(id).is_empty(),
        "nothing more is written"
    );
    assert_eq!(
        server.poll(id, t2 + stall).map(record),
        Some(Rec::Closed(CloseReason::WriteQueueFull, Initiator::Local))
    );
    assert!(server.take_finished(id).is_some());
    assert_eq!(server.stats().write_stalls, 1);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn shutdown_refuses_newcomers_and_drops_the_rest_after_the_grace() {
    let cfg = config();
    let sreg = registry();
    let mut cregs: Vec<Registry<CAP>> = (0..2).map(|_| registry()).collect();
    let mut clients: Vec<ClientConn<'_>> = cregs.iter_mut().map(|r| client(&cfg, r)).collect();
    let grace = Duration::from_secs(2);
    let opts = ServerOptions {
        shutdown_grace: grace,
        ..options(4)
    };
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<4>());
    let ids: Vec<ClientId> = (0..2)
        .map(|_| server.accept([0; BUF], [0; BUF], T0).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        exchange(&mut server, *id, &mut clients[i], T0);
    }
    let t = Instant::from_millis(500);
    server.shutdown(t);
    assert!(server.is_shutting_down() && !server.is_done());
    assert_eq!(server.admit(T0, 0), Err(Refused::ShuttingDown));
    let mut out = [0u8; 128];
    let n = server.refusal(Refused::ShuttingDown, &mut out).unwrap();
    assert!(n > 0);
    // The first client takes its closeconn; the second takes nothing.
    let (se, ce) = exchange(&mut server, ids[0], &mut clients[0], t);
    assert_eq!(
        (se, ce),
        (
            vec![Rec::Closed(CloseReason::ServerShutdown, Initiator::Local)],
            vec![Rec::Closed(CloseReason::ServerShutdown, Initiator::Peer)]
        )
    );
    assert!(server.take_finished(ids[0]).is_some());
    assert_eq!(
        server.poll(ids[1], t).map(record),
        Some(Rec::Closed(CloseReason::ServerShutdown, Initiator::Local))
    );
    assert!(
        server.take_finished(ids[1]).is_none(),
        "its closeconn waits"
    );
    assert_eq!(server.poll_timeout(), Some(t + grace));
    assert_eq!(server.handle_timeout(t + grace), Some(ids[1]));
    assert_eq!(server.handle_timeout(t + grace), None);
    let (done, _) = server.take_finished(ids[1]).expect("dropped");
    assert_eq!(done.reason, CloseReason::ServerShutdown);
    assert!(server.is_done());
    assert_eq!(server.stats().refused, 1);
}

#[test]
fn input_pauses_while_the_transmit_queue_is_over_its_share() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, options(1), slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    assert!(server.wants_input(id));
    // Just over half of the 4,096-byte queue (a 10-byte header and the body).
    let chat = sreg.id_of::<Chat>().unwrap();
    server.send_encoded(id, chat, &[0u8; BUF / 2]).unwrap();
    assert!(!server.wants_input(id), "over half: no input is taken");
    c.send::<Chat>(&Numbered { seq: 1, text: "a" }).unwrap();
    let bytes = take_tx(&mut c);
    assert_eq!(server.handle_input(id, &bytes), bytes.len());
    assert!(server.poll(id, T0).is_none(), "the packet waits for room");
    let n = server.poll_transmit(id).len();
    server.transmitted(id, n, T0);
    assert!(server.wants_input(id));
    assert!(matches!(
        server.poll(id, T0).map(record),
        Some(Rec::Packet(_, Some("test:chat"), _))
    ));
    // 100 percent never pauses.
    let opts = ServerOptions {
        read_pause_percent: 100,
        ..options(1)
    };
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    server.send_encoded(id, chat, &[0u8; BUF / 2]).unwrap();
    assert!(server.wants_input(id));
}

/// A growable storage, as a host adapter has.
struct Grow<'a>(Vec<ServerSlot<'a, Postcard, Buf, Buf, CAP>>);

impl<'a> Storage<ServerSlot<'a, Postcard, Buf, Buf, CAP>> for Grow<'a> {
    fn slots(&self) -> &[ServerSlot<'a, Postcard, Buf, Buf, CAP>] {
        &self.0
    }
    fn slots_mut(&mut self) -> &mut [ServerSlot<'a, Postcard, Buf, Buf, CAP>] {
        &mut self.0
    }
    fn push(
        &mut self,
        slot: ServerSlot<'a, Postcard, Buf, Buf, CAP>,
    ) -> Result<(), ServerSlot<'a, Postcard, Buf, Buf, CAP>> {
        self.0.push(slot);
        Ok(())
    }
}

#[test]
fn growable_storage_grows_to_max_clients_and_reuses_freed_slots() {
    let cfg = config();
    let sreg = registry();
    let mut server = Server::new(&cfg, &sreg, Postcard, options(50), Grow(Vec::new()));
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(server.accept([0; BUF], [0; BUF], T0).unwrap());
    }
    assert_eq!(server.accept([0; BUF], [0; BUF], T0), Err(Refused::Full));
    assert_eq!(server.stats().peak_clients, 50);
    for id in &ids[..10] {
        server.handle_transport_closed(*id);
        assert!(server.take_finished(*id).is_some());
    }
    for _ in 0..10 {
        let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
        assert!(id.slot() < 50, "a freed slot, not a new one");
    }
    assert_eq!(server.len(), 50);
    assert_eq!(server.stats().accepted, 60);
}

#[test]
fn the_idle_timeout_frees_the_slot_of_a_silent_client_and_a_frame_timeout_counts_too() {
    let cfg = peng3dnet_core::Config {
        idle_timeout: Duration::from_secs(5),
        frame_timeout: Duration::from_secs(2),
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, options(1), slots::<1>());
    let t = |ms| Instant::from_millis(ms);
    let silent = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, silent, &mut c, T0);
    assert!(server.is_connected(silent));
    assert_eq!(
        server.accept([0; BUF], [0; BUF], t(1)).err(),
        Some(Refused::Full)
    );
    assert_eq!(server.poll_timeout(), Some(t(5_000)));
    assert_eq!(server.handle_timeout(t(5_000)), Some(silent));
    assert_eq!(
        server.poll(silent, t(5_000)).map(record),
        Some(Rec::Closed(CloseReason::IdleTimeout, Initiator::Local))
    );
    let out = server.poll_transmit(silent).to_vec();
    server.transmitted(silent, out.len(), t(5_000));
    assert!(server.take_finished(silent).is_some());
    // The slot is free again: the next client gets in, and a frame it
    // starts and never ends closes it after the frame timeout.
    let next = server.accept([0; BUF], [0; BUF], t(5_001)).unwrap();
    let out = server.poll_transmit(next).to_vec();
    server.transmitted(next, out.len(), t(5_001));
    assert_eq!(server.handle_input(next, &[0, 0, 0, 50, 0]), 5);
    assert!(server.poll(next, t(5_001)).is_none());
    // The write attempt after the events files the timers they moved.
    server.transmitted(next, 0, t(5_001));
    assert_eq!(server.poll_timeout(), Some(t(7_001)));
    assert_eq!(server.handle_timeout(t(7_001)), Some(next));
    assert_eq!(
        server.poll(next, t(7_001)).map(record),
        Some(Rec::Closed(CloseReason::FrameTimeout, Initiator::Local))
    );
    assert_eq!(server.stats().timed_out, 2);
}

#[test]
fn admission_bounds_clients_per_address_and_accepts_per_second() {
    let cfg = config();
    let sreg = registry();
    let opts = ServerOptions {
        max_per_address: 2,
        accept_rate: 2,
        accept_burst: 2,
        ..options(8)
    };
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<8>());
    let t = |ms| Instant::from_millis(ms);
    // The adapter holds two clients from this address: a third is refused.
    assert_eq!(server.admit(t(0), 2), Err(Refused::TooManyFromAddress));
    assert_eq!(
        Refused::TooManyFromAddress.reason().as_wire(),
        Some("toomanyconnections")
    );
    assert_eq!(server.admit(t(0), 1), Ok(()));
    // Two at once (the burst), then one every 500 ms.
    server.accept([0; BUF], [0; BUF], t(0)).unwrap();
    server.accept([0; BUF], [0; BUF], t(0)).unwrap();
    assert_eq!(
        server.accept([0; BUF], [0; BUF], t(10)).err(),
        Some(Refused::Busy)
    );
    assert_eq!(Refused::Busy.reason().as_wire(), Some("serverbusy"));
    assert_eq!(server.admit(t(499), 0), Err(Refused::Busy));
    assert_eq!(server.admit(t(500), 0), Ok(()), "admit takes no token");
    server.accept([0; BUF], [0; BUF], t(500)).unwrap();
    assert_eq!(server.admit(t(500), 0), Err(Refused::Busy));
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.refused), (3, 4));
}

/// A transmit buffer that can never hold the `handshake` (the whole
/// registry) is refused when the connection is made, with the sizes, not
/// closed with `writequeuefull` once a client asks (issue 13, point 7).
/// With the size computed the handshake completes.
#[test]
fn a_transmit_buffer_too_small_for_the_handshake_is_refused_at_construction() {
    use peng3dnet_core::connection::{server_tx_required, NewConnectionError, MIN_TX_BUFFER};
    use peng3dnet_core::rules::Rules;
    use peng3dnet_core::{Connection, Event};
    let cfg = config();
    let mut sreg = Registry::<CAP>::new();
    for i in 0..10 {
        let name: &'static str = Box::leak(
            format!("test:a-rather-long-packet-name-for-the-handshake.{i:02}").into_boxed_str(),
        );
        sreg.register_raw(name, None, Rules::NONE).unwrap();
    }
    let required = server_tx_required(&cfg, &sreg, &Postcard).unwrap();
    assert!(required > MIN_TX_BUFFER, "{required}");
    let too_small = NewConnectionError::HandshakeTooLarge {
        required,
        capacity: required - 1,
    };
    assert_eq!(
        too_small.to_string(),
        format!(
            "the handshake (the whole packet registry) needs a transmit buffer of {required} \
             bytes, this one holds {}",
            required - 1
        )
    );
    let mut rx = [0u8; BUF];
    let mut small = vec![0u8; required - 1];
    let refused = Connection::server(&cfg, &sreg, Postcard, &mut rx[..], &mut small[..], T0);
    assert_eq!(refused.err(), Some(too_small));
    // The core server refuses it the same way, and says so beforehand.
    let server = Server::new(&cfg, &sreg, Postcard, options(1), slots::<1>());
    assert_eq!(server.check_tx_capacity(required - 1), Err(too_small));
    assert_eq!(server.check_tx_capacity(required), Ok(()));

    // Exactly `required` bytes: the client connects.
    let mut tx = vec![0u8; required];
    let mut s = Connection::server(&cfg, &sreg, Postcard, &mut rx[..], &mut tx[..], T0).unwrap();
    let mut creg = sreg.clone();
    let mut c = client(&cfg, &mut creg);
    let mut connected = [false, false];
    for _ in 0..8 {
        let n = c.handle_input(s.poll_transmit());
        s.transmitted(n);
        while let Some(e) = c.poll(T0) {
            connected[1] |= matches!(e, Event::Connected);
            assert!(!matches!(e, Event::Closed(_)), "client: {e:?}");
        }
        let n = s.handle_input(c.poll_transmit());
        c.transmitted(n);
        while let Some(e) = s.poll(T0) {
            connected[0] |= matches!(e, Event::Connected);
            assert!(!matches!(e, Event::Closed(_)), "server: {e:?}");
        }
    }
    assert_eq!(connected, [true, true]);
}

/// A server whose client `id` is connected to `c`, its transmit queue over
/// the read-pause mark (3,072 of 4,096 bytes queued at `t1`, the mark is
/// half), with a write stall of 30 s.
fn over_the_mark<'a>(
    cfg: &'a peng3dnet_core::Config<'a>,
    sreg: &'a Registry<CAP>,
    c: &mut ClientConn<'_>,
    t1: Instant,
) -> (TestServer<'a, Slots<'a, 1>>, ClientId) {
    let opts = ServerOptions {
        write_stall_timeout: Duration::from_secs(30),
        ..options(1)
    };
    let mut server = Server::new(cfg, sreg, Postcard, opts, slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, c, T0);
    let chat = sreg.id_of::<Chat>().unwrap();
    server.send_encoded(id, chat, &[7u8; 3062]).unwrap();
    assert_eq!(server.poll_transmit(id).len(), 3072);
    assert!(!server.wants_input(id), "over the mark");
    assert_eq!(server.handle_timeout(t1), None);
    (server, id)
}

#[test]
fn a_trickle_reader_whose_queue_stays_over_the_mark_is_dropped_after_the_write_stall() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let t1 = Instant::from_millis(1_000);
    let (mut server, id) = over_the_mark(&cfg, &sreg, &mut c, t1);
    let stall = Duration::from_secs(30);
    assert_eq!(server.poll_timeout(), Some(t1 + stall));
    // 100 bytes every 5 s: progress, but the queue stays over the mark.
    for k in 1..6 {
        let t = t1 + Duration::from_secs(5 * k);
        server.transmitted(id, 100, t);
        assert_eq!(server.handle_timeout(t), None);
        assert_eq!(
            server.poll_timeout(),
            Some(t1 + stall),
            "progress over the mark does not restart the timer"
        );
    }
    assert!(server.poll_transmit(id).len() > BUF / 2);
    assert_eq!(server.handle_timeout(t1 + stall), Some(id));
    assert!(server.is_abandoned(id));
    assert_eq!(
        server.poll(id, t1 + stall).map(record),
        Some(Rec::Closed(CloseReason::WriteQueueFull, Initiator::Local))
    );
    assert_eq!(server.stats().write_stalls, 1);
    assert!(server.take_finished(id).is_some());
}

#[test]
fn a_slow_reader_that_drains_below_the_mark_in_time_is_never_dropped() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let t1 = Instant::from_millis(1_000);
    let (mut server, id) = over_the_mark(&cfg, &sreg, &mut c, t1);
    let stall = Duration::from_secs(30);
    let chat = sreg.id_of::<Chat>().unwrap();
    // 300 bytes every 5 s for two minutes, and a new 3 KB answer each time
    // the queue is empty: it is over the mark for 20 s of every 55 s.
    let mut drained_at = None;
    let mut refills = 0;
    for k in 1..=24 {
        let t = t1 + Duration::from_secs(5 * k);
        let n = server.poll_transmit(id).len().min(300);
        server.transmitted(id, n, t);
        if server.poll_transmit(id).len() <= BUF / 2 && drained_at.is_none() {
            drained_at = Some(t);
            assert_eq!(
                server.poll_timeout(),
                Some(t + stall),
                "drained below the mark: the timer restarts"
            );
        }
        if server.poll_transmit(id).is_empty() {
            server.send_encoded(id, chat, &[7u8; 3062]).unwrap();
            server.transmitted(id, 0, t);
            drained_at = None;
            refills += 1;
        }
        assert_eq!(server.handle_timeout(t), None, "dropped at {t:?}");
    }
    assert!(refills >= 2, "{refills} refills");
    assert!(!server.is_abandoned(id));
    assert_eq!(server.stats().write_stalls, 0);
}

#[test]
fn fair_rounds_bound_input_and_packets_and_serve_the_longest_waiting_first() {
    let cfg = config();
    let sreg = registry();
    let (mut creg_a, mut creg_b) = (registry(), registry());
    let (mut a, mut b) = (client(&cfg, &mut creg_a), client(&cfg, &mut creg_b));
    let opts = ServerOptions {
        round_quantum: 150,
        round_work: 150,
        ..options(2)
    };
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<2>());
    let ia = server.accept([0; BUF], [0; BUF], T0).unwrap();
    let ib = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, ia, &mut a, T0);
    exchange(&mut server, ib, &mut b, T0);
    // Four frames of 203 bytes from each: each larger than a quantum.
    let text = "x".repeat(190);
    for c in [&mut a, &mut b] {
        for seq in 0..4 {
            c.send::<Chat>(&Numbered { seq, text: &text }).unwrap();
        }
    }
    let (wire_a, wire_b) = (take_tx(&mut a), take_tx(&mut b));
    assert!(wire_a.len() > 800);
    // Rounds counted: input is offered a quantum a round.
    server.begin_round();
    let mut fed = [0usize; 2];
    for (i, (id, wire)) in [(ia, &wire_a), (ib, &wire_b)].into_iter().enumerate() {
        let buf = server.receive_buffer(id);
        assert_eq!(buf.len(), 150, "one quantum of input a round");
        let n = buf.len().min(wire.len() - fed[i]);
        buf[..n].copy_from_slice(&wire[fed[i]..fed[i] + n]);
        server.commit_received(id, n);
        fed[i] += n;
        assert!(server.receive_buffer(id).is_empty());
        assert!(server.is_deferred(id), "its input share is read");
    }
    // The rest is copied in (no bound on `handle_input`).
    for (i, (id, wire)) in [(ia, &wire_a), (ib, &wire_b)].into_iter().enumerate() {
        assert_eq!(
            server.handle_input(id, &wire[fed[i]..]),
            wire.len() - fed[i]
        );
    }
    // Round 1: A's first packet (larger than a quantum) takes the shared
    // budget; B's finds it spent and waits.
    assert_eq!(take(&mut server, ia), 1);
    assert!(server.is_deferred(ia), "A's next waits for its debt");
    assert_eq!(take(&mut server, ib), 0);
    assert!(server.is_deferred(ib));
    // Round 2: B waited longer: its packet comes first though A is polled
    // first and has credit again.
    server.begin_round();
    assert_eq!(take(&mut server, ia), 0, "B waited longer");
    assert_eq!(take(&mut server, ib), 1);
    // Round 3: now A has waited longest.
    server.begin_round();
    assert_eq!(take(&mut server, ia), 1);
    assert_eq!(take(&mut server, ib), 0);
    server.begin_round();
    assert_eq!(take(&mut server, ia), 0);
    assert_eq!(take(&mut server, ib), 1);
    // Every packet comes out in the end, in a bounded number of rounds.
    let (mut got_a, mut got_b) = (2, 2);
    for _ in 0..8 {
        server.begin_round();
        got_a += take(&mut server, ia);
        got_b += take(&mut server, ib);
    }
    assert_eq!((got_a, got_b), (4, 4));
    assert!(!server.is_deferred(ia) && !server.is_deferred(ib));
}

#[test]
fn without_rounds_nothing_is_held_back() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let opts = ServerOptions {
        round_quantum: 16,
        round_work: 16,
        ..options(1)
    };
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    let text = "x".repeat(190);
    for seq in 0..4 {
        c.send::<Chat>(&Numbered { seq, text: &text }).unwrap();
    }
    let wire = take_tx(&mut c);
    assert!(server.receive_buffer(id).len() > wire.len());
    assert_eq!(server.handle_input(id, &wire), wire.len());
    let mut n = 0;
    while server.poll(id, T0).is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    assert!(!server.is_deferred(id));
    // Nor with rounds counted and a quantum of 0 (fair service off).
    let opts = ServerOptions {
        round_quantum: 0,
        round_work: 0,
        ..options(1)
    };
    let mut creg = registry();
    let mut c = client(&cfg, &mut creg);
    let mut server = Server::new(&cfg, &sreg, Postcard, opts, slots::<1>());
    let id = server.accept([0; BUF], [0; BUF], T0).unwrap();
    exchange(&mut server, id, &mut c, T0);
    for seq in 0..4 {
        c.send::<Chat>(&Numbered { seq, text: &text }).unwrap();
    }
    let wire = take_tx(&mut c);
    server.begin_round();
    assert!(server.receive_buffer(id).len() > wire.len());
    assert_eq!(server.handle_input(id, &wire), wire.len());
    assert_eq!(take(&mut server, id), 4);
    assert!(!server.is_deferred(id));
}

/// Polls client `id` until `None`; how many chat packets came out.
fn take<'a, S: Storage<ServerSlot<'a, Postcard, Buf, Buf, CAP>>>(
    server: &mut TestServer<'a, S>,
    id: ClientId,
) -> usize {
    let mut n = 0;
    while let Some(e) = server.poll(id, T0) {
        assert!(matches!(record(e), Rec::Packet(_, Some("test:chat"), _)));
        n += 1;
    }
    n
}
