//! Layer 1: one fixture per connection state, asserting the exact frames each
//! input makes a connection emit.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::Config;
use peng3dnet_core::messages::{CloseConn, HandshakeAccept, HandshakeOut, Hello, SetType};
use peng3dnet_core::registry::Registry;
use peng3dnet_core::{CloseReason, Initiator, State};
use peng3dnet_test_support::{
    config, deliver, frame, postcard, registry, take_tx, Chat, ClientConn, Conn, Numbered, Rec,
    BUF, CAP, T0,
};

fn closeconn(reason: &str) -> Vec<u8> {
    frame(
        16,
        0,
        &postcard(&CloseConn {
            reason: Some(reason),
        }),
    )
}

fn server<'a>(cfg: &'a Config<'a>, reg: &'a Registry<CAP>) -> Conn<'a> {
    Conn::server(cfg, reg, Postcard, [0; BUF], [0; BUF], T0).unwrap()
}

fn client<'a>(cfg: &'a Config<'a>, reg: &'a mut Registry<CAP>, conntype: &str) -> ClientConn<'a> {
    Conn::client(cfg, reg, Postcard, [0; BUF], [0; BUF], conntype, T0).unwrap()
}

fn hello() -> Vec<u8> {
    frame(
        1,
        0,
        &postcard(&Hello {
            version: "t1",
            protoversion: 2,
        }),
    )
}

fn handshake(reg: &Registry<CAP>) -> Vec<u8> {
    frame(
        3,
        0,
        &postcard(&HandshakeOut {
            version: "t1",
            protoversion: 2,
            registry: reg.as_map(),
        }),
    )
}

#[test]
fn new_server_sends_hello_and_waits_for_the_type() {
    let (cfg, reg) = (config(), registry());
    let mut s = server(&cfg, &reg);
    // Postcard: "t1" as a length-prefixed string, then protoversion 2.
    assert_eq!(
        take_tx(&mut s),
        [0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 2, b't', b'1', 2]
    );
    assert_eq!(s.state(), State::WaitType);
    assert_eq!(s.conntype(), "_notset");
    assert_eq!(s.poll_timeout(), Some(T0 + cfg.handshake_timeout));
}

#[test]
fn new_client_sends_nothing() {
    let cfg = config();
    let mut reg = registry();
    let c = client(&cfg, &mut reg, "classic");
    assert!(c.poll_transmit().is_empty());
    assert_eq!(c.state(), State::HelloWait);
}

#[test]
fn client_hellowait() {
    let cfg = config();
    // A hello answers with settype and moves on to the handshake.
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    assert_eq!(deliver(&mut c, &hello(), &[], T0), []);
    let mut settype = vec![0, 0, 0, 14, 0, 0, 0, 2, 0, 0, 7];
    settype.extend_from_slice(b"classic");
    assert_eq!(take_tx(&mut c), settype);
    assert_eq!(
        (c.state(), c.conntype()),
        (State::HandshakeWait1, "classic")
    );

    // Another protocol version closes.
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    let bad = frame(
        1,
        0,
        &postcard(&Hello {
            version: "t1",
            protoversion: 3,
        }),
    );
    assert_eq!(
        deliver(&mut c, &bad, &[], T0),
        [Rec::Closed(
            CloseReason::ProtoVersionMismatch,
            Initiator::Local
        )]
    );
    assert_eq!(take_tx(&mut c), closeconn("protoversionmismatch"));

    // A handshake before the hello breaks its rules, whose action is close.
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    let hs = handshake(&registry());
    assert_eq!(
        deliver(&mut c, &hs, &[], T0),
        [Rec::Closed(
            CloseReason::SmartPacketInvalid,
            Initiator::Local
        )]
    );
    assert_eq!(take_tx(&mut c), closeconn("smartpacketinvalid"));

    // An application packet before the handshake is ignored (SMART, ignore).
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    let chat = frame(64, 0, &postcard(&Numbered { seq: 1, text: "x" }));
    assert_eq!(deliver(&mut c, &chat, &[], T0), [Rec::Ignored(64)]);
    assert!(take_tx(&mut c).is_empty());
}

#[test]
fn server_waittype() {
    let (cfg, reg) = (config(), registry());
    // classic: the handshake with the whole registry follows.
    let mut s = server(&cfg, &reg);
    take_tx(&mut s);
    let settype = frame(
        2,
        0,
        &postcard(&SetType {
            conntype: "classic",
        }),
    );
    assert_eq!(deliver(&mut s, &settype, &[], T0), []);
    assert_eq!(take_tx(&mut s), handshake(&reg));
    assert_eq!(s.state(), State::HandshakeWait1);

    // ping: active at once, nothing sent.
    let mut s = server(&cfg, &reg);
    take_tx(&mut s);
    let settype = frame(2, 0, &postcard(&SetType { conntype: "ping" }));
    assert_eq!(deliver(&mut s, &settype, &[], T0), []);
    assert!(take_tx(&mut s).is_empty());
    assert_eq!((s.state(), s.conntype()), (State::Active, "ping"));

    // An unknown type closes with unknownconntype.
    let mut s = server(&cfg, &reg);
    take_tx(&mut s);
    let settype = frame(
        2,
        0,
        &postcard(&SetType {
            conntype: "teleport",
        }),
    );
    assert_eq!(
        deliver(&mut s, &settype, &[], T0),
        [Rec::Closed(CloseReason::UnknownConnType, Initiator::Local)]
    );
    assert_eq!(take_tx(&mut s), closeconn("unknownconntype"));

    // ping is unknown on a server without ping answers.
    let no_ping = Config {
        ping: None,
        ..config()
    };
    let mut s = server(&no_ping, &reg);
    take_tx(&mut s);
    let settype = frame(2, 0, &postcard(&SetType { conntype: "ping" }));
    assert_eq!(
        deliver(&mut s, &settype, &[], T0),
        [Rec::Closed(CloseReason::UnknownConnType, Initiator::Local)]
    );

    // A settype whose body does not decode closes with malformedpacket.
    let mut s = server(&cfg, &reg);
    take_tx(&mut s);
    assert_eq!(
        deliver(&mut s, &frame(2, 0, &[200]), &[], T0),
        [Rec::Closed(CloseReason::MalformedPacket, Initiator::Local)]
    );
    assert_eq!(take_tx(&mut s), closeconn("malformedpacket"));
}

#[test]
fn client_handshake_wait1() {
    let cfg = config();
    let server_reg = registry();
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    deliver(&mut c, &hello(), &[], T0);
    take_tx(&mut c);
    assert_eq!(
        deliver(&mut c, &handshake(&server_reg), &[], T0),
        [Rec::Connected]
    );
    assert_eq!(take_tx(&mut c), [0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 1]);
    assert_eq!(c.state(), State::Active);
    assert_eq!(c.poll_timeout(), None);

    // A registry with other names closes with packetregmismatch.
    let mut other = Registry::<CAP>::new();
    other.register::<Chat>().unwrap();
    let mut reg = registry();
    let mut c = client(&cfg, &mut reg, "classic");
    deliver(&mut c, &hello(), &[], T0);
    take_tx(&mut c);
    assert_eq!(
        deliver(&mut c, &handshake(&other), &[], T0),
        [Rec::Closed(
            CloseReason::PacketRegMismatch,
            Initiator::Local
        )]
    );
    assert_eq!(take_tx(&mut c), closeconn("packetregmismatch"));
}

#[test]
fn server_handshake_wait1() {
    let (cfg, reg) = (config(), registry());
    let to_wait1 = |s: &mut Conn<'_>| {
        take_tx(s);
        deliver(
            s,
            &frame(
                2,
                0,
                &postcard(&SetType {
                    conntype: "classic",
                }),
            ),
            &[],
            T0,
        );
        take_tx(s);
    };
    let mut s = server(&cfg, &reg);
    to_wait1(&mut s);
    let accept = frame(4, 0, &postcard(&HandshakeAccept { success: true }));
    assert_eq!(deliver(&mut s, &accept, &[], T0), [Rec::Connected]);
    assert!(take_tx(&mut s).is_empty());
    assert!(s.is_connected());

    let mut s = server(&cfg, &reg);
    to_wait1(&mut s);
    let refuse = frame(4, 0, &postcard(&HandshakeAccept { success: false }));
    assert_eq!(
        deliver(&mut s, &refuse, &[], T0),
        [Rec::Closed(CloseReason::HandshakeFailed, Initiator::Local)]
    );
    assert_eq!(take_tx(&mut s), closeconn("handshakefailed"));

    // A second settype in this state is ignored (its rule action is ignore).
    let mut s = server(&cfg, &reg);
    to_wait1(&mut s);
    let settype = frame(
        2,
        0,
        &postcard(&SetType {
            conntype: "classic",
        }),
    );
    assert_eq!(deliver(&mut s, &settype, &[], T0), [Rec::Ignored(2)]);
    assert!(take_tx(&mut s).is_empty());
}

#[test]
fn closed_connections_take_no_input_and_send_nothing_more() {
    let (cfg, reg) = (config(), registry());
    let mut s = server(&cfg, &reg);
    take_tx(&mut s);
    s.close(CloseReason::Command);
    assert_eq!(take_tx(&mut s), closeconn("command"));
    assert!(s.is_finished());
    assert_eq!(
        peng3dnet_test_support::drain(&mut s, T0),
        [Rec::Closed(CloseReason::Command, Initiator::Local)]
    );
    let settype = frame(
        2,
        0,
        &postcard(&SetType {
            conntype: "classic",
        }),
    );
    assert_eq!(s.handle_input(&settype), settype.len());
    assert_eq!(peng3dnet_test_support::drain(&mut s, T0), []);
    assert!(take_tx(&mut s).is_empty());
    s.close(CloseReason::UserRequest);
    assert!(take_tx(&mut s).is_empty(), "a second close sends nothing");
    assert_eq!(s.poll_timeout(), None);
}
