//! Layer 2: handshake transcripts for client and server, compared with
//! constants, also with every transfer split at every byte.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::Config;
use peng3dnet_core::time::Instant;
use peng3dnet_test_support::{config, registry, transcript, ClientConn, Conn, BUF};

const CLASSIC: &[&str] = &[
    "S>C peng3dnet:internal.hello",
    "C: state HANDSHAKE_WAIT1",
    "C>S peng3dnet:internal.settype",
    "S: state HANDSHAKE_WAIT1",
    "S>C peng3dnet:internal.handshake",
    "C: Connected",
    "C: state ACTIVE",
    "C>S peng3dnet:internal.handshake.accept",
    "S: Connected",
    "S: state ACTIVE",
];

const PING: &[&str] = &[
    "S>C peng3dnet:internal.hello",
    "C: state ACTIVE",
    "C>S peng3dnet:internal.settype",
    "C>S #64",
    "S: PingAnswered",
    "S: state ACTIVE",
    "S>C #65",
    "C: Pong",
    "C: Closed pingcomplete Local",
    "C: state CLOSED",
    "C>S peng3dnet:internal.closeconn",
    "S: Closed pingcomplete Peer",
    "S: state CLOSED",
];

fn run(conntype: &str, cuts: &dyn Fn(usize) -> Vec<usize>) -> Vec<String> {
    let cfg: Config<'static> = config();
    let server_reg = registry();
    let mut client_reg = registry();
    let now = Instant::ZERO;
    let mut server: Conn<'_> =
        Conn::server(&cfg, &server_reg, Postcard, [0; BUF], [0; BUF], now).unwrap();
    let mut client: ClientConn<'_> = Conn::client(
        &cfg,
        &mut client_reg,
        Postcard,
        [0; BUF],
        [0; BUF],
        conntype,
        now,
    )
    .unwrap();
    transcript(&mut server, &mut client, now, cuts)
}

fn check(conntype: &str, expected: &[&str]) {
    assert_eq!(run(conntype, &|_| vec![]), expected, "whole transfers");
    assert_eq!(
        run(conntype, &|len| (1..len).collect()),
        expected,
        "one byte at a time"
    );
    // Every transfer split in two at every byte.
    for split in 1..300 {
        assert_eq!(
            run(conntype, &|_| vec![split]),
            expected,
            "split at byte {split}"
        );
    }
}

#[test]
fn classic_handshake_transcript() {
    check("classic", CLASSIC);
}

#[test]
fn ping_transcript() {
    check("ping", PING);
}

#[test]
fn the_handshake_frames_are_longer_than_the_split_range() {
    // The split loop above must cover every byte of the longest transfer.
    let cfg = config();
    let reg = registry();
    let server: Conn<'_> =
        Conn::server(&cfg, &reg, Postcard, [0; BUF], [0; BUF], Instant::ZERO).unwrap();
    assert!(server.poll_transmit().len() < 300);
    let hs_len = {
        let msg = peng3dnet_core::messages::HandshakeOut {
            version: "t1",
            protoversion: 2,
            registry: reg.as_map(),
        };
        peng3dnet_core::codec::Codec::encoded_len(&Postcard, &msg).unwrap() + 10
    };
    assert!(hs_len < 300, "handshake is {hs_len} bytes");
}
