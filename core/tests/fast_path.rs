//! [`Connection::poll`] hands out the common frame (an application packet on
//! an open `classic` connection whose rules pass) through a fast path;
//! [`Connection::poll_with`] never takes it. Fed the same bytes, in the same
//! pieces, two equal connections must report the same events, whatever the
//! mode, the state, the rules, a partial frame or a frame that closes.

use peng3dnet_core::connection::Take;
use peng3dnet_core::registry::RegistryAccess;
use peng3dnet_core::{Mode, State};
use peng3dnet_test_support::*;

/// Every event `poll_with` reports, as records.
fn drain_with<G: RegistryAccess<CAP>>(conn: &mut Conn<'_, G>) -> Vec<Rec> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match conn.poll_with(T0, |event, _| (Take::Consume, record(event))) {
            Some(rec) => out.push(rec),
            None => return out,
        }
    }
    panic!("poll_with did not run dry after 100,000 events");
}

/// Feeds `bytes` in pieces of `piece` bytes to `fast` (drained with
/// `poll`) and `general` (drained with `poll_with`); returns both records.
fn feed<G: RegistryAccess<CAP>>(
    fast: &mut Conn<'_, G>,
    general: &mut Conn<'_, G>,
    bytes: &[u8],
    piece: usize,
) -> (Vec<Rec>, Vec<Rec>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for part in bytes.chunks(piece) {
        assert_eq!(fast.handle_input(part), part.len());
        a.extend(drain(fast, T0));
        assert_eq!(general.handle_input(part), part.len());
        b.extend(drain_with(general));
    }
    (a, b)
}

/// A frame of every registered id, an unknown one and a registered one with
/// an empty body.
fn every_packet<G: RegistryAccess<CAP>>(conn: &Conn<'_, G>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in conn.registry().entries() {
        if entry.id >= 64 {
            bytes.extend(frame(entry.id, 0, &[1, 2, 3, entry.id as u8]));
        }
    }
    bytes.extend(frame(500, 0, b"unknown"));
    bytes.extend(frame(conn.registry().id_of::<Plain>().unwrap(), 0, b""));
    bytes
}

#[test]
fn poll_and_poll_with_agree() {
    connected!(s1, c1);
    connected!(s2, c2);
    let (fast, general) = (&mut s1, &mut s2);
    let stream = every_packet(fast);
    let mut passed = 0;
    for mode in [None, Some(Mode::PLAY), Some(Mode::NOTSET)] {
        if let Some(mode) = mode {
            fast.set_mode(mode);
            general.set_mode(mode);
        }
        for piece in [stream.len(), 1, 7, 64] {
            let (a, b) = feed(fast, general, &stream, piece);
            assert_eq!(a, b, "mode {mode:?}, pieces of {piece}");
            assert!(a.iter().any(|r| matches!(r, Rec::Ignored(_))), "{a:?}");
            passed += a.iter().filter(|r| matches!(r, Rec::Packet(..))).count();
        }
    }
    assert!(passed > 0);
    // In LOGGEDIN, a packet whose rules want ACTIVE and close on a breach
    // closes; what follows it is not handed out.
    fast.set_state(State::LoggedIn);
    general.set_state(State::LoggedIn);
    let (a, b) = feed(fast, general, &stream, 3);
    assert_eq!(a, b);
    assert!(matches!(a.last(), Some(Rec::Closed(..))), "{a:?}");

    // The clients, which synced their ids from the server: every packet,
    // then a compressed frame (decompression is off), which closes.
    let (fast, general) = (&mut c1, &mut c2);
    let stream = every_packet(fast);
    let (a, b) = feed(fast, general, &stream, 5);
    assert_eq!(a, b);
    assert!(a.iter().any(|r| matches!(r, Rec::Packet(..))), "{a:?}");
    // (`test:toserver` closed them: a breach on the wrong side closes.)
    assert!(matches!(a.last(), Some(Rec::Closed(..))), "{a:?}");
    connected!(s3, c3);
    connected!(s4, c4);
    let (fast, general) = (&mut c3, &mut c4);
    let chat = fast.registry().id_of::<Chat>().unwrap();
    let mut last = frame(chat, 0, b"before");
    last.extend(frame(chat, 1, b"zz"));
    last.extend(frame(chat, 0, b"after"));
    let (a, b) = feed(fast, general, &last, last.len());
    assert_eq!(a, b);
    assert!(matches!(a.first(), Some(Rec::Packet(..))), "{a:?}");
    assert!(matches!(a.last(), Some(Rec::Closed(..))), "{a:?}");
    assert!(fast.is_closed() && general.is_closed());
    assert!(!s3.is_closed() && !s4.is_closed());
}
