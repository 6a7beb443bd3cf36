//! The core allocates nothing: a counting global allocator watches a full
//! handshake plus 10,000 packets each way, a ping, and a close.

use allocation_counter::measure;
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::time::Instant;
use peng3dnet_core::{CloseReason, Event};
use peng3dnet_test_support::{config, registry, Chat, ClientConn, Conn, Numbered, BUF};

/// Moves bytes both ways once and handles every event without allocating;
/// returns how many chats each side received.
fn round(s: &mut Conn<'_>, c: &mut ClientConn<'_>, now: Instant) -> (u32, u32) {
    let (mut to_s, mut to_c) = (0, 0);
    let n = c.handle_input(s.poll_transmit());
    s.transmitted(n);
    while let Some(ev) = c.poll(now) {
        if let Event::Packet(p) = ev {
            assert!(p.decode::<Chat>().is_ok());
            to_c += 1;
        }
    }
    let n = s.handle_input(c.poll_transmit());
    c.transmitted(n);
    while let Some(ev) = s.poll(now) {
        if let Event::Packet(p) = ev {
            let msg = p.decode::<Chat>().unwrap();
            to_s += 1;
            // Echo back from inside the event loop's reach.
            let _ = msg;
        }
    }
    (to_s, to_c)
}

fn session() -> (u32, u32) {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let now = Instant::ZERO;
    let mut s: Conn<'_> = Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], now).unwrap();
    let mut c: ClientConn<'_> = Conn::client(
        &cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "classic", now,
    )
    .unwrap();
    for _ in 0..4 {
        round(&mut s, &mut c, now);
    }
    assert!(s.is_connected() && c.is_connected());
    let (mut got_s, mut got_c) = (0, 0);
    let mut seq = 0;
    while seq < 10_000 {
        // Fill the buffers, then move them.
        while seq < 10_000 {
            let msg = Numbered {
                seq,
                text: "a message of thirty-two bytes..",
            };
            if c.send::<Chat>(&msg).is_err() || s.send::<Chat>(&msg).is_err() {
                break;
            }
            seq += 1;
        }
        let (a, b) = round(&mut s, &mut c, now);
        got_s += a;
        got_c += b;
    }
    for _ in 0..4 {
        let (a, b) = round(&mut s, &mut c, now);
        got_s += a;
        got_c += b;
    }
    c.close(CloseReason::UserRequest);
    round(&mut s, &mut c, now);
    assert!(s.is_closed() && c.is_finished());
    (got_s, got_c)
}

fn ping() -> bool {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    let now = Instant::ZERO;
    let mut s: Conn<'_> = Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], now).unwrap();
    let mut c: ClientConn<'_> =
        Conn::client(&cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "ping", now).unwrap();
    for _ in 0..4 {
        round(&mut s, &mut c, now);
    }
    s.is_closed() && c.is_closed()
}

#[test]
fn the_counter_sees_allocations() {
    // Guard against a counter that counts nothing.
    let info = measure(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
        std::hint::black_box(v);
    });
    assert!(info.count_total >= 1);
}

#[test]
fn handshake_10000_packets_each_way_ping_and_close_allocate_nothing() {
    let mut result = (0, 0);
    let mut pinged = false;
    let info = measure(|| {
        result = session();
        pinged = ping();
    });
    assert_eq!(result, (10_000, 10_000));
    assert!(pinged);
    assert_eq!(info.count_total, 0, "the core allocated: {info:?}");
    assert_eq!(info.bytes_total, 0);
}
