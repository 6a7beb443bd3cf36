//! The frame, idle and keepalive timers of a connection (`Config::frame_timeout`,
//! `idle_timeout`, `keepalive_interval`), driven through the public API with
//! simulated time.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::Config;
use peng3dnet_core::registry::RegistryAccess;
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Initiator};
use peng3dnet_test_support::{
    config, drain, encode, exchange_at, frame, frames_of, registry, take_tx, Chat, Conn, Numbered,
    Rec, BUF, T0,
};

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

/// Fires both connections' timers at `now` (as an adapter does when
/// `poll_timeout` passed) and collects what they report.
fn tick<G1: RegistryAccess<16>, G2: RegistryAccess<16>>(
    s: &mut Conn<'_, G1>,
    c: &mut Conn<'_, G2>,
    now: Instant,
) -> (Vec<Rec>, Vec<Rec>) {
    s.handle_timeout(now);
    c.handle_timeout(now);
    (drain(s, now), drain(c, now))
}

macro_rules! connected {
    ($cfg:expr, $sreg:ident, $creg:ident, $s:ident, $c:ident) => {
        let $sreg = registry();
        let mut $creg = registry();
        let mut $s: Conn<'_> =
            Conn::server(&$cfg, &$sreg, Postcard, [0; BUF], [0; BUF], T0).unwrap();
        let mut $c: Conn<'_, _> = Conn::client(
            &$cfg, &mut $creg, Postcard, [0; BUF], [0; BUF], "classic", T0,
        )
        .unwrap();
        let (se, ce) = exchange_at(&mut $s, &mut $c, T0);
        assert_eq!((se, ce), (vec![Rec::Connected], vec![Rec::Connected]));
    };
}

fn chat_frame(seq: u32, sreg_id: u32) -> Vec<u8> {
    frame(
        sreg_id,
        0,
        &encode(&Postcard, &Numbered { seq, text: "hi" }),
    )
}

#[test]
fn a_frame_that_does_not_complete_closes_with_frametimeout() {
    let cfg = config();
    connected!(cfg, sreg, creg, s, c);
    let chat = sreg.id_of::<Chat>().unwrap();
    let whole = chat_frame(1, chat);
    // Part of a frame at 1 s, more of the same at 20 s: the timer runs from
    // its first byte, not from the latest.
    assert_eq!(s.handle_input(&whole[..5]), 5);
    assert!(drain(&mut s, secs(1)).is_empty());
    assert_eq!(s.poll_timeout(), Some(secs(1) + cfg.frame_timeout));
    assert_eq!(s.handle_input(&whole[5..7]), 2);
    assert!(drain(&mut s, secs(20)).is_empty());
    assert_eq!(s.poll_timeout(), Some(secs(1) + cfg.frame_timeout));
    s.handle_timeout(secs(30));
    assert!(drain(&mut s, secs(30)).is_empty(), "not due yet");
    s.handle_timeout(secs(31));
    assert_eq!(
        drain(&mut s, secs(31)),
        [Rec::Closed(CloseReason::FrameTimeout, Initiator::Local)]
    );
    // The peer is told why.
    let sent = frames_of(&take_tx(&mut s));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 16);
    c.handle_input(&frame(sent[0].0, sent[0].1, &sent[0].2));
    assert_eq!(
        drain(&mut c, secs(31)),
        [Rec::Closed(CloseReason::FrameTimeout, Initiator::Peer)]
    );
    assert_eq!(s.poll_timeout(), None, "no timer once closed");
}

#[test]
fn a_stream_of_frames_longer_than_the_frame_timeout_is_not_cut() {
    let cfg = Config {
        frame_timeout: Duration::from_secs(10),
        ..config()
    };
    connected!(cfg, sreg, creg, s, c);
    let chat = sreg.id_of::<Chat>().unwrap();
    // Every read ends inside the next frame, 6 s after the last: each frame
    // takes 6 s, the stream 60 s, and the buffer never runs empty.
    let mut stream = Vec::new();
    for seq in 0..12 {
        stream.extend(chat_frame(seq, chat));
    }
    let step = stream.len() / 10 + 1;
    let mut got = 0;
    for (k, piece) in stream.chunks(step).enumerate() {
        let now = secs(6 * k as u64);
        assert_eq!(s.handle_input(piece), piece.len());
        got += drain(&mut s, now)
            .iter()
            .filter(|r| matches!(r, Rec::Packet(..)))
            .count();
        s.handle_timeout(now);
        assert!(!s.is_closed(), "closed at {now}");
    }
    assert_eq!(got, 12);
    drop(c);
}

#[test]
fn a_silent_peer_closes_with_idletimeout_and_input_holds_it_off() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(5),
        ..config()
    };
    connected!(cfg, sreg, creg, s, c);
    // Traffic at 4 s moves the server's idle timer to 9 s.
    c.send::<Chat>(&Numbered { seq: 1, text: "x" }).unwrap();
    let (se, _) = exchange_at(&mut s, &mut c, secs(4));
    assert!(matches!(se[..], [Rec::Packet(..)]));
    assert_eq!(s.poll_timeout(), Some(secs(9)));
    // The client heard nothing since the handshake at 0 s.
    let (se, ce) = tick(&mut s, &mut c, secs(6));
    assert!(se.is_empty());
    assert_eq!(
        ce,
        [Rec::Closed(CloseReason::IdleTimeout, Initiator::Local)]
    );
    let (se, _) = exchange_at(&mut s, &mut c, secs(6));
    assert_eq!(se, [Rec::Closed(CloseReason::IdleTimeout, Initiator::Peer)]);
}

#[test]
fn keepalives_keep_idle_peers_connected_and_report_nothing() {
    // The defaults' keepalive (15 s) under a 40 s idle timeout on both sides.
    let cfg = Config {
        idle_timeout: Duration::from_secs(40),
        ..Config::new()
    };
    assert_eq!(cfg.keepalive_interval, Duration::from_secs(15));
    connected!(cfg, sreg, creg, s, c);
    let mut keepalives = 0;
    let mut now = T0;
    // Ten minutes of silence but for keepalives, waking at each timer.
    for _ in 0..200 {
        let next = [s.poll_timeout(), c.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a timer runs");
        assert!(next > now, "a timer due at {next} did not move");
        now = next;
        if now > secs(600) {
            break;
        }
        assert_eq!(tick(&mut s, &mut c, now), (vec![], vec![]));
        let (to_c, to_s) = (s.poll_transmit().len(), c.poll_transmit().len());
        keepalives += (to_c > 0) as u32 + (to_s > 0) as u32;
        assert_eq!(
            exchange_at(&mut s, &mut c, now),
            (vec![], vec![]),
            "a keepalive is neither an event nor an ignored packet"
        );
    }
    assert!(now > secs(600));
    assert!(s.is_connected() && c.is_connected());
    // Each side sends one when it queued nothing for 15 s: about 40 each.
    assert!((60..=90).contains(&keepalives), "{keepalives} keepalives");
}

#[test]
fn a_half_open_connection_is_found_on_both_sides_by_the_idle_timeout() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(40),
        ..Config::new()
    };
    connected!(cfg, sreg, creg, s, c);
    // From now on nothing arrives either way (the path died): both keep
    // sending keepalives into the void, and both give up after 40 s.
    let mut closed = (None, None);
    for _ in 0..100 {
        let Some(now) = [s.poll_timeout(), c.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        let (se, ce) = tick(&mut s, &mut c, now);
        take_tx(&mut s);
        take_tx(&mut c);
        for (events, slot) in [(se, &mut closed.0), (ce, &mut closed.1)] {
            if let Some(Rec::Closed(reason, _)) = events.last() {
                *slot = Some((reason.clone(), now));
            }
        }
    }
    let idle = Some((CloseReason::IdleTimeout, secs(40)));
    assert_eq!(closed, (idle.clone(), idle));
}

#[test]
fn traffic_makes_keepalives_unneeded() {
    let cfg = Config::new();
    connected!(cfg, sreg, creg, s, c);
    // The server sends every 10 s (under the 15 s interval) and sends no
    // keepalive; the client, which sends nothing, does.
    let chat = sreg.id_of::<Chat>().unwrap();
    let mut from_client = 0;
    for k in 1..=10u64 {
        let now = secs(10 * k);
        s.send::<Chat>(&Numbered {
            seq: k as u32,
            text: "t",
        })
        .unwrap();
        s.handle_timeout(now);
        c.handle_timeout(now);
        let to_c = frames_of(&take_tx(&mut s));
        assert!(
            to_c.iter().all(|f| f.0 == chat),
            "only chat from the server"
        );
        from_client += frames_of(&take_tx(&mut c)).len();
        for f in to_c {
            c.handle_input(&frame(f.0, f.1, &f.2));
        }
        drain(&mut c, now);
    }
    // Due at 15 s (seen at 20 s: the handshake was queued since, so none),
    // then one at 40, 60, 80 and 100 s.
    assert_eq!(from_client, 4, "client keepalives");
}
