//! Every SmartPacket rule in both directions, every close reason, custom
//! connection types and the client table, on connected core pairs.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{
    ConnTypeHooks, CustomConnType, Dispatch, IgnoreCause, SendError, Take, MIN_TX_BUFFER,
};
use peng3dnet_core::messages::CloseConn;
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess, SyncPolicy};
use peng3dnet_core::rules::Violation;
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{
    CloseReason, Config, Connection, Event, Initiator, Mode, SecurityLevel, Side, State,
};
use peng3dnet_test_support::*;

#[test]
fn typed_packets_travel_both_ways() {
    connected!(s, c);
    c.send::<Chat>(&Numbered { seq: 7, text: "hi" }).unwrap();
    s.send::<Chat>(&Numbered { seq: 8, text: "ho" }).unwrap();
    let (se, ce) = exchange(&mut s, &mut c);
    let id = s.registry().id_of::<Chat>().unwrap();
    assert_eq!(
        se,
        [Rec::Packet(
            id,
            Some("test:chat"),
            postcard(&Numbered { seq: 7, text: "hi" })
        )]
    );
    assert_eq!(
        ce,
        [Rec::Packet(
            id,
            Some("test:chat"),
            postcard(&Numbered { seq: 8, text: "ho" })
        )]
    );
    // decode checks the type.
    c.send::<Chat>(&Numbered { seq: 9, text: "x" }).unwrap();
    let bytes = take_tx(&mut c);
    s.handle_input(&bytes);
    match s.poll(T0) {
        Some(peng3dnet_core::Event::Packet(p)) => {
            assert_eq!(p.decode::<Chat>().unwrap().seq, 9);
            assert!(p.decode::<ToServer>().is_err());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn side_rule_both_directions() {
    connected!(s, c);
    // Client may send ToServer; the server receives it.
    c.send::<ToServer>(&1).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Packet(_, Some("test:toserver"), _)]));
    // ToClient is ignored-on-invalid: the client refuses to send it, and
    // nothing reaches the wire; the connection goes on.
    assert_eq!(
        c.send::<ToClient>(&1),
        Err(SendError::Rules {
            packet: ToClient::NAME,
            violation: Violation::Side {
                receiver: Side::Client
            }
        })
    );
    assert!(c.poll_transmit().is_empty());
    assert!(c.is_connected());
    // The server sending ToServer breaks a close rule: refused and closed.
    assert!(matches!(
        s.send::<ToServer>(&1),
        Err(SendError::Rules { .. })
    ));
    let (_, ce) = exchange(&mut s, &mut c);
    assert_eq!(
        ce,
        [Rec::Closed(
            CloseReason::SmartPacketInvalid,
            Initiator::Peer
        )]
    );
}

#[test]
fn side_rule_on_receive() {
    connected!(s, c);
    let to_server = c.registry().id_of::<ToServer>().unwrap();
    let to_client = c.registry().id_of::<ToClient>().unwrap();
    // A ToClient arriving at the server is ignored...
    s.handle_input(&frame(to_client, 0, &postcard(&1u32)));
    assert_eq!(drain(&mut s, T0), [Rec::Ignored(to_client)]);
    // ...a ToServer arriving at the client closes it (action close).
    c.handle_input(&frame(to_server, 0, &postcard(&1u32)));
    assert_eq!(
        drain(&mut c, T0),
        [Rec::Closed(
            CloseReason::SmartPacketInvalid,
            Initiator::Local
        )]
    );
    let (se, _) = exchange(&mut s, &mut c);
    assert_eq!(
        se,
        [Rec::Closed(
            CloseReason::SmartPacketInvalid,
            Initiator::Peer
        )]
    );
}

#[test]
fn security_rule_is_checked_before_send() {
    connected!(s, c);
    assert_eq!(
        c.send::<Secret>(&"pw"),
        Err(SendError::Rules {
            packet: Secret::NAME,
            violation: Violation::Security {
                required: SecurityLevel::Encrypted,
                actual: SecurityLevel::None
            }
        })
    );
    assert!(
        c.poll_transmit().is_empty(),
        "a refused send never reaches the wire"
    );
    c.set_security_level(SecurityLevel::ServerAuth);
    c.send::<Secret>(&"pw").unwrap();
    // Not checked on receive: the server (level None) takes it.
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Packet(_, Some("test:secret"), _)]));
}

#[test]
fn mode_rule_both_directions() {
    connected!(s, c);
    assert!(matches!(
        c.send::<Move>(&(1, 2)),
        Err(SendError::Rules {
            violation: Violation::Mode { .. },
            ..
        })
    ));
    c.set_mode(Mode::PLAY);
    c.send::<Move>(&(1, 2)).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(
        matches!(se[..], [Rec::Ignored(_)]),
        "server is not in PLAY: {se:?}"
    );
    s.set_mode(Mode::PLAY);
    c.send::<Move>(&(1, 2)).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Packet(_, Some("test:move"), _)]));
}

/// A refusal names the packet and the modes by name (issue 13, point 7): on
/// send in the error, on receive in the event's cause.
#[test]
fn rule_errors_name_the_packet_and_the_modes() {
    connected!(s, c);
    let refused = c.send::<Move>(&(1, 2)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "packet test:move breaks its rules: requires mode PLAY (3), connection is in NOTSET (0)"
    );
    c.set_mode(Mode::PLAY);
    c.send::<Move>(&(1, 2)).unwrap();
    let bytes = take_tx(&mut c);
    s.handle_input(&bytes);
    match s.poll(T0) {
        Some(Event::Ignored { cause, .. }) => {
            assert_eq!(
                cause,
                IgnoreCause::Rules {
                    packet: Move::NAME,
                    violation: Violation::Mode {
                        required: Mode::PLAY,
                        actual: Mode::NOTSET
                    }
                }
            );
            assert_eq!(
                cause.to_string(),
                "packet test:move broke its rules: requires mode PLAY (3), \
                 connection is in NOTSET (0)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn state_rule_both_directions() {
    connected!(s, c);
    assert!(matches!(
        c.send::<AfterLogin>(&()),
        Err(SendError::Rules {
            violation: Violation::State { .. },
            ..
        })
    ));
    c.set_state(State::LoggedIn);
    assert_eq!(c.state(), State::LoggedIn);
    c.send::<AfterLogin>(&()).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Ignored(_)]));
    s.set_state(State::LoggedIn);
    c.send::<AfterLogin>(&()).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(
        se[..],
        [Rec::Packet(_, Some("test:afterlogin"), _)]
    ));
    // Chat needs ACTIVE exactly.
    assert!(c.send::<Chat>(&Numbered { seq: 0, text: "" }).is_err());
}

#[test]
fn conntype_rule_and_plain_packets() {
    connected!(s, c);
    assert_eq!(
        c.send::<CustomOnly>(&1),
        Err(SendError::Rules {
            packet: CustomOnly::NAME,
            violation: Violation::ConnType,
        })
    );
    // Plain packets have no rules.
    c.set_state(State::LoggedIn);
    c.send::<Plain>(&&b"any"[..]).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Packet(_, Some("test:plain"), _)]));
}

#[test]
fn plain_packets_travel_before_the_handshake() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "classic");
    c.send::<Plain>(&&b"early"[..]).unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(
        se.contains(&Rec::Packet(
            69,
            Some("test:plain"),
            postcard(&&b"early"[..])
        )),
        "{se:?}"
    );
}

#[test]
fn send_errors() {
    connected!(s, c);
    assert_eq!(
        c.send_by_name("nope:nope", &1u8),
        Err(SendError::NotRegistered)
    );
    assert_eq!(c.send_by_id(999, &1u8), Err(SendError::NotRegistered));
    // The protocol's own packets cannot be sent by hand.
    assert_eq!(
        c.send_by_id(16, &CloseConn { reason: None }),
        Err(SendError::NotRegistered)
    );
    let big = "x".repeat(BUF);
    assert!(matches!(
        c.send::<Chat>(&Numbered { seq: 0, text: &big }),
        Err(SendError::TooLarge { .. })
    ));
    let mid = "y".repeat(BUF / 3);
    let mut sent = 0;
    let err = loop {
        match c.send::<Chat>(&Numbered {
            seq: sent,
            text: &mid,
        }) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10);
    };
    assert!(matches!(err, SendError::WouldBlock { .. }));
    assert_eq!(sent, 2);
    let (se, _) = exchange(&mut s, &mut c);
    assert_eq!(se.len(), 2);
    c.send::<Chat>(&Numbered { seq: 2, text: &mid }).unwrap();
    c.close(CloseReason::UserRequest);
    assert_eq!(
        c.send::<Chat>(&Numbered { seq: 3, text: "" }),
        Err(SendError::Closed)
    );
    let (se, ce) = exchange(&mut s, &mut c);
    assert_eq!(se.len(), 2, "queued data drains before the close: {se:?}");
    assert_eq!(
        se[1],
        Rec::Closed(CloseReason::UserRequest, Initiator::Peer)
    );
    assert_eq!(
        ce,
        [Rec::Closed(CloseReason::UserRequest, Initiator::Local)]
    );
}

#[test]
fn close_reasons_reach_the_peer() {
    for reason in [
        CloseReason::ServerShutdown,
        CloseReason::Command,
        CloseReason::UserRequest,
        CloseReason::other("my own reason"),
        CloseReason::Unspecified,
    ] {
        connected!(s, c);
        s.close(reason.clone());
        let (se, ce) = exchange(&mut s, &mut c);
        assert_eq!(se, [Rec::Closed(reason.clone(), Initiator::Local)]);
        assert_eq!(ce, [Rec::Closed(reason.clone(), Initiator::Peer)]);
        assert!(s.is_finished() && c.is_finished());
    }
}

#[test]
fn socketclose_when_the_transport_ends() {
    connected!(s, c);
    c.send::<Chat>(&Numbered {
        seq: 1,
        text: "lost",
    })
    .unwrap();
    c.handle_transport_closed();
    assert_eq!(
        drain(&mut c, T0),
        [Rec::Closed(CloseReason::SocketClose, Initiator::Transport)]
    );
    assert!(
        c.is_finished(),
        "nothing is left to write on a dead transport"
    );
    s.handle_transport_closed();
    assert_eq!(
        drain(&mut s, T0),
        [Rec::Closed(CloseReason::SocketClose, Initiator::Transport)]
    );
}

#[test]
fn handshake_timeout_on_both_sides() {
    let cfg = Config {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "classic");
    let deadline = T0 + Duration::from_millis(500);
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(Instant::from_millis(499));
    assert!(!s.is_closed());
    s.handle_timeout(deadline);
    c.handle_timeout(deadline);
    assert_eq!(
        drain(&mut s, deadline),
        [Rec::Closed(CloseReason::HandshakeTimeout, Initiator::Local)]
    );
    assert_eq!(
        drain(&mut c, deadline),
        [Rec::Closed(CloseReason::HandshakeTimeout, Initiator::Local)]
    );
    // The server's hello was queued before the close; both go out in order.
    let frames = frames_of(&take_tx(&mut s));
    assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 16]);
}

#[test]
fn frame_errors_close_with_their_reasons() {
    let cases: [(Vec<u8>, CloseReason); 6] = [
        (frame(64, 1, b"garbage"), CloseReason::DecompressionFailed),
        (
            (BUF as u32 - 3).to_be_bytes().to_vec(),
            CloseReason::FrameTooLarge,
        ),
        (u32::MAX.to_be_bytes().to_vec(), CloseReason::FrameTooLarge),
        (vec![0, 0, 0, 5], CloseReason::MalformedFrame),
        (frame(64, 0x8000, b""), CloseReason::UnknownFlags),
        (frame(64, 2, b""), CloseReason::EncryptionUnsupported),
    ];
    for (bytes, reason) in cases {
        connected!(s, c);
        s.handle_input(&bytes);
        assert_eq!(
            drain(&mut s, T0),
            [Rec::Closed(reason.clone(), Initiator::Local)]
        );
        let (_, ce) = exchange(&mut s, &mut c);
        assert_eq!(ce, [Rec::Closed(reason, Initiator::Peer)]);
    }
}

#[test]
fn the_largest_frame_that_fits_is_taken() {
    connected!(s, c);
    let id = c.registry().id_of::<Plain>().unwrap();
    let bytes = frame(id, 0, &vec![0u8; BUF - 10]);
    assert_eq!(bytes.len(), BUF);
    assert_eq!(s.handle_input(&bytes), BUF);
    assert!(matches!(drain(&mut s, T0)[..], [Rec::Packet(..)]));
}

/// `closeconn` bodies a server must read as "no reason given".
const UNSPECIFIED_CLOSECONNS: &[(&str, &[u8])] = &[("nil", &[0]), ("garbage", &[1, 200, 200])];

#[test]
fn closeconn_with_nil_or_garbage() {
    for (what, body) in UNSPECIFIED_CLOSECONNS {
        connected!(s, c);
        let _ = &mut c;
        s.handle_input(&frame(16, 0, body));
        assert_eq!(
            drain(&mut s, T0),
            [Rec::Closed(CloseReason::Unspecified, Initiator::Peer)],
            "{what}"
        );
    }
}

/// A client that closes with `packetregmismatch` says which names differ
/// (issue 13, point 7): registries that differ by one name each way.
#[test]
fn registry_mismatch_names_the_names() {
    use peng3dnet_core::registry::{IdMismatch, RegistryMismatch};
    let rules = peng3dnet_core::rules::Rules::NONE;
    let mut sreg = Registry::<CAP>::new();
    sreg.register_raw("test:both", None, rules).unwrap();
    sreg.register_raw("test:only-at-the-server", None, rules)
        .unwrap();
    let mut creg = Registry::<CAP>::new();
    creg.register_raw("test:both", None, rules).unwrap();
    creg.register_raw("test:only-here", None, rules).unwrap();
    let cfg = config();
    pair!(cfg, sreg, creg, s, c, "classic");
    assert_eq!(c.registry_mismatch(), None);
    let (_, ce) = exchange(&mut s, &mut c);
    assert_eq!(
        ce,
        [Rec::Closed(
            CloseReason::PacketRegMismatch,
            Initiator::Local
        )]
    );
    let mismatch = c.registry_mismatch().expect("a mismatch report");
    assert_eq!(
        mismatch,
        RegistryMismatch {
            peer_lacks: Some("test:only-here"),
            peer_lacks_count: 1,
            we_lack: Some("test:only-at-the-server".try_into().unwrap()),
            we_lack_count: 1,
            id_differs: None,
            duplicate_names: false,
        }
    );
    assert_eq!(
        mismatch.to_string(),
        "the server lacks test:only-here; we lack test:only-at-the-server"
    );
    assert_eq!(
        s.registry_mismatch(),
        None,
        "the server only hears the close"
    );

    // A shared client registry cannot adopt ids: the same names under other
    // ids are named with both ids (and a long name is cut).
    let long = "test:a-name-longer-than-thirty-two-bytes";
    let mut sreg = Registry::<CAP>::new();
    sreg.register_raw("test:both", Some(70), rules).unwrap();
    sreg.register_raw(long, None, rules).unwrap();
    let mut shared = Registry::<CAP>::new();
    shared.register_raw("test:both", Some(71), rules).unwrap();
    let mut s: Conn<'_> = Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], T0).unwrap();
    let mut c: Conn<'_> =
        Conn::client(&cfg, &shared, Postcard, [0; BUF], [0; BUF], "classic", T0).unwrap();
    exchange(&mut s, &mut c);
    let mismatch = c.registry_mismatch().expect("a mismatch report");
    assert_eq!(
        mismatch.id_differs,
        Some(IdMismatch {
            packet: "test:both",
            ours: 71,
            theirs: 70
        })
    );
    assert_eq!(mismatch.we_lack.as_deref(), Some(&long[..32]));
    assert_eq!(
        mismatch.to_string(),
        format!(
            "we lack {}; test:both has id 71 here, 70 at the server",
            &long[..32]
        )
    );
}

#[test]
fn registry_sync_policies() {
    let mut other = Registry::<CAP>::new();
    other.register::<Chat>().unwrap();
    // closeconnection (the default): the client closes.
    let cfg = config();
    let mut creg = registry();
    pair!(cfg, other, creg, s, c, "classic");
    let (se, ce) = exchange(&mut s, &mut c);
    assert_eq!(
        ce,
        [Rec::Closed(
            CloseReason::PacketRegMismatch,
            Initiator::Local
        )]
    );
    assert_eq!(
        se,
        [Rec::Closed(CloseReason::PacketRegMismatch, Initiator::Peer)]
    );
    // ignore: connected, and the shared packet has the server's id.
    let cfg = Config {
        sync_policy: SyncPolicy::Ignore,
        ..config()
    };
    let mut sreg = Registry::<CAP>::new();
    sreg.register_raw("test:other", None, peng3dnet_core::rules::Rules::NONE)
        .unwrap();
    sreg.register::<Chat>().unwrap();
    let mut creg = Registry::<CAP>::new();
    creg.register::<Chat>().unwrap();
    pair!(cfg, sreg, creg, s, c, "classic");
    let (se, ce) = exchange(&mut s, &mut c);
    assert_eq!((se, ce), (vec![Rec::Connected], vec![Rec::Connected]));
    assert_eq!(c.registry().id_of::<Chat>(), Some(65));
    c.send::<Chat>(&Numbered {
        seq: 1,
        text: "synced",
    })
    .unwrap();
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(se[..], [Rec::Packet(65, Some("test:chat"), _)]));
}

/// Frames that close a server's ping connection: (what, packet id, body,
/// reason).
const PING_SERVER_CLOSES: &[(&str, u32, &[u8], CloseReason)] = &[
    (
        "a ping answer arrives at the server",
        65,
        &[],
        CloseReason::PingInvalidSide,
    ),
    (
        "another id on a ping connection",
        70,
        &[],
        CloseReason::InvalidPingPacket,
    ),
    (
        "a request that does not decode",
        64,
        &[1],
        CloseReason::InvalidPingPacket,
    ),
];

#[test]
fn ping_closes() {
    let cfg = config();
    let sreg = registry();
    for (what, id, body, reason) in PING_SERVER_CLOSES {
        let mut s: Conn<'_> = Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], T0).unwrap();
        take_tx(&mut s);
        s.handle_input(&frame(
            2,
            0,
            &postcard(&peng3dnet_core::messages::SetType { conntype: "ping" }),
        ));
        assert_eq!(drain(&mut s, T0), [], "{what}");
        s.handle_input(&frame(*id, 0, body));
        assert_eq!(
            drain(&mut s, T0),
            [Rec::Closed(reason.clone(), Initiator::Local)],
            "{what}"
        );
    }
    // pinginvalidside on the client: a ping request arrives there.
    let mut creg = registry();
    let mut c: ClientConn<'_> =
        Conn::client(&cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "ping", T0).unwrap();
    let mut hello = frame(
        1,
        0,
        &postcard(&peng3dnet_core::messages::Hello {
            version: "t1",
            protoversion: 2,
        }),
    );
    hello.extend(frame(
        64,
        0,
        &postcard(&peng3dnet_core::messages::PingRequest { time: 1.0 }),
    ));
    c.handle_input(&hello);
    assert_eq!(
        drain(&mut c, T0),
        [Rec::Closed(CloseReason::PingInvalidSide, Initiator::Local)]
    );
    // A ping connection carries no application packets.
    let mut creg = registry();
    let mut c: ClientConn<'_> =
        Conn::client(&cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "ping", T0).unwrap();
    c.handle_input(&frame(
        1,
        0,
        &postcard(&peng3dnet_core::messages::Hello {
            version: "t1",
            protoversion: 2,
        }),
    ));
    assert_eq!(drain(&mut c, T0), []);
    assert_eq!(c.send::<Plain>(&&b""[..]), Err(SendError::ConnTypeRefused));
}

#[test]
fn ping_reports_the_delay_and_the_server_data() {
    let data = [("name", "test server")];
    let cfg = Config {
        ping: Some(peng3dnet_core::connection::PingServerConfig {
            release: "r1",
            data: &data,
        }),
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    let mut s: Conn<'_> = Conn::server(&cfg, &sreg, Postcard, [0; BUF], [0; BUF], T0).unwrap();
    let mut c: ClientConn<'_> =
        Conn::client(&cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "ping", T0).unwrap();
    c.handle_input(&take_tx(&mut s));
    assert_eq!(drain(&mut c, T0), []);
    s.handle_input(&take_tx(&mut c));
    assert_eq!(drain(&mut s, T0), [Rec::PingAnswered]);
    c.handle_input(&take_tx(&mut s));
    let later = Instant::from_millis(42);
    let ev = c.poll(later);
    match ev {
        Some(peng3dnet_core::Event::Pong { delay, body }) => {
            assert_eq!(delay, Duration::from_millis(42));
            // The answer is a map: oldmsg, peng3dnet, then the server's data.
            let text = String::from_utf8_lossy(body);
            assert!(
                text.contains("test server") && text.contains("r1"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

struct Custom;
impl ConnTypeHooks for Custom {
    fn receive(&self, _side: Side, packet_id: u32) -> Dispatch {
        if packet_id == 200 {
            Dispatch::Consume
        } else {
            Dispatch::Registry
        }
    }
    fn allow_send(&self, _side: Side, packet_id: u32) -> bool {
        packet_id != 64
    }
}

#[test]
fn custom_connection_type() {
    let hooks = Custom;
    let types = [CustomConnType {
        name: "custom",
        hooks: &hooks,
    }];
    let cfg = Config {
        conntypes: &types,
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "custom");
    let (se, ce) = exchange(&mut s, &mut c);
    assert_eq!((se, ce), (vec![Rec::Connected], vec![Rec::Connected]));
    assert_eq!((s.conntype(), c.conntype()), ("custom", "custom"));
    // No registry sync on a custom type; rules still apply.
    c.send::<CustomOnly>(&3).unwrap();
    assert_eq!(
        c.send::<Chat>(&Numbered { seq: 0, text: "" }),
        Err(SendError::ConnTypeRefused)
    );
    let (se, _) = exchange(&mut s, &mut c);
    assert!(matches!(
        se[..],
        [Rec::Packet(_, Some("test:customonly"), _)]
    ));
    s.handle_input(&frame(200, 0, b"raw"));
    assert_eq!(
        drain(&mut s, T0),
        [Rec::ConnTypePacket(200, b"raw".to_vec())]
    );
    // A client cannot ask for a type nobody declared.
    let mut creg = registry();
    assert!(Conn::client(&cfg, &mut creg, Postcard, [0; BUF], [0; BUF], "nope", T0).is_err());
}

#[test]
fn writequeuefull_when_the_handshake_does_not_fit() {
    use peng3dnet_core::connection::{server_tx_required, NewConnectionError};
    let cfg = config();
    let sreg = registry();
    // A buffer that can never hold the handshake is refused when the
    // connection is made (it used to close with writequeuefull at the
    // handshake).
    let required = server_tx_required(&cfg, &sreg, &Postcard).unwrap();
    assert!(required > MIN_TX_BUFFER, "{required}");
    let never = Connection::<Postcard, [u8; 64], [u8; MIN_TX_BUFFER], CAP>::server(
        &cfg,
        &sreg,
        Postcard,
        [0; 64],
        [0; MIN_TX_BUFFER],
        T0,
    );
    assert_eq!(
        never.err(),
        Some(NewConnectionError::HandshakeTooLarge {
            required,
            capacity: MIN_TX_BUFFER
        })
    );
    // One that holds it, but not beside a `hello` nobody took yet: the
    // handshake closes with writequeuefull.
    let mut tx = vec![0u8; required];
    let mut s: Connection<'_, Postcard, [u8; 64], &mut [u8], CAP> =
        Connection::server(&cfg, &sreg, Postcard, [0; 64], &mut tx[..], T0).unwrap();
    s.handle_input(&frame(
        2,
        0,
        &postcard(&peng3dnet_core::messages::SetType {
            conntype: "classic",
        }),
    ));
    assert!(matches!(
        s.poll(T0),
        Some(peng3dnet_core::Event::Closed(peng3dnet_core::Closed {
            reason: CloseReason::WriteQueueFull,
            ..
        }))
    ));
    // The closeconn still fits into the reserve, after the hello.
    let frames = frames_of(s.poll_transmit());
    assert_eq!(frames.last().unwrap().0, 16, "{frames:?}");
    let tiny = Connection::<Postcard, [u8; 64], [u8; 64], CAP>::server(
        &cfg, &sreg, Postcard, [0; 64], [0; 64], T0,
    );
    assert!(tiny.is_err());
}

#[test]
fn compressed_frames_when_decompression_is_off() {
    let cfg = Config {
        decompress: false,
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "classic");
    exchange(&mut s, &mut c);
    s.handle_input(&frame(64, 1, b"\x78\x9c"));
    assert_eq!(
        drain(&mut s, T0),
        [Rec::Closed(
            CloseReason::CompressionNotEnabled,
            Initiator::Local
        )]
    );
}

#[test]
fn poll_protocol_runs_the_protocol_and_leaves_packets_in_order() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "classic");
    // The handshake runs through poll_protocol alone.
    for _ in 0..4 {
        c.handle_input(&take_tx(&mut s));
        while let Some(ev) = c.poll_protocol(T0) {
            assert!(matches!(ev, peng3dnet_core::Event::Connected), "{ev:?}");
        }
        s.handle_input(&take_tx(&mut c));
        while s.poll_protocol(T0).is_some() {}
    }
    assert!(s.is_connected() && c.is_connected());
    // A packet, then a close: the close waits behind the packet.
    s.send::<Chat>(&Numbered {
        seq: 1,
        text: "first",
    })
    .unwrap();
    s.close(CloseReason::Command);
    c.handle_input(&take_tx(&mut s));
    assert!(c.poll_protocol(T0).is_none());
    assert!(c.has_buffered_frame());
    assert!(
        c.is_connected(),
        "the close is not processed before the packet"
    );
    assert!(matches!(
        drain(&mut c, T0)[..],
        [
            Rec::Packet(..),
            Rec::Closed(CloseReason::Command, Initiator::Peer)
        ]
    ));
    assert!(!c.has_buffered_frame());
}

#[test]
fn frames_received_before_the_end_of_stream_are_still_delivered() {
    // With the peer's closeconn behind a packet: its reason wins.
    connected!(s, c);
    s.send::<Chat>(&Numbered {
        seq: 1,
        text: "last words",
    })
    .unwrap();
    s.close(CloseReason::Command);
    c.handle_input(&take_tx(&mut s));
    c.handle_transport_closed();
    assert!(!c.is_connected() && !c.is_closed());
    assert_eq!(
        c.send::<Chat>(&Numbered { seq: 2, text: "" }),
        Err(SendError::Closed),
        "nothing can be sent on a dead transport"
    );
    let recs = drain(&mut c, T0);
    assert!(
        matches!(recs[0], Rec::Packet(_, Some("test:chat"), _)),
        "{recs:?}"
    );
    assert_eq!(recs[1], Rec::Closed(CloseReason::Command, Initiator::Peer));
    // Without one: the packet, then socketclose.
    connected!(s2, c2);
    s2.send::<Chat>(&Numbered {
        seq: 1,
        text: "cut",
    })
    .unwrap();
    c2.handle_input(&take_tx(&mut s2));
    c2.handle_transport_closed();
    let recs = drain(&mut c2, T0);
    assert!(matches!(recs[0], Rec::Packet(..)), "{recs:?}");
    assert_eq!(
        recs[1],
        Rec::Closed(CloseReason::SocketClose, Initiator::Transport)
    );
    assert!(c2.is_finished());
}

#[test]
fn a_ping_connection_is_never_connected() {
    let cfg = config();
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "ping");
    c.handle_input(&take_tx(&mut s));
    assert_eq!(drain(&mut c, T0), []);
    assert_eq!(c.state(), State::Active);
    assert!(!c.is_connected());
    s.handle_input(&take_tx(&mut c));
    assert_eq!(drain(&mut s, T0), [Rec::PingAnswered]);
    assert!(!s.is_connected());
}

/// Collects `poll_with` events as records, answering nothing.
fn drain_with<G: RegistryAccess<CAP>>(conn: &mut Conn<'_, G>, take: Take) -> Vec<Rec> {
    let mut out = Vec::new();
    for _ in 0..64 {
        match conn.poll_with(T0, |event, _| (take, record(event))) {
            Some(rec) => out.push(rec),
            None => return out,
        }
        if take == Take::Keep && matches!(out.last(), Some(Rec::Packet(..))) {
            return out;
        }
    }
    panic!("poll_with did not run dry");
}

#[test]
fn poll_with_answers_a_packet_in_place() {
    connected!(s, c);
    for seq in 0..3 {
        c.send::<Chat>(&Numbered {
            seq,
            text: "echo me",
        })
        .unwrap();
    }
    let to_s = take_tx(&mut c);
    assert_eq!(s.handle_input(&to_s), to_s.len());
    let mut echoed = 0;
    for _ in 0..10 {
        let answered = s.poll_with(T0, |event, outbox| match event {
            Event::Packet(p) => {
                outbox.send_encoded(p.packet_id, p.body).unwrap();
                (Take::Consume, true)
            }
            _ => (Take::Consume, false),
        });
        match answered {
            Some(true) => echoed += 1,
            Some(false) => {}
            None => break,
        }
    }
    assert_eq!(echoed, 3);
    let ce = deliver(&mut c, &take_tx(&mut s), &[], T0);
    let id = s.registry().id_of::<Chat>().unwrap();
    let want: Vec<Rec> = (0..3)
        .map(|seq| {
            Rec::Packet(
                id,
                Some("test:chat"),
                postcard(&Numbered {
                    seq,
                    text: "echo me",
                }),
            )
        })
        .collect();
    assert_eq!(ce, want);
}

#[test]
fn poll_with_keep_hands_the_same_packet_out_again() {
    connected!(s, c);
    c.send::<Chat>(&Numbered { seq: 1, text: "a" }).unwrap();
    c.send::<Chat>(&Numbered { seq: 2, text: "b" }).unwrap();
    let to_s = take_tx(&mut c);
    s.handle_input(&to_s);
    let id = s.registry().id_of::<Chat>().unwrap();
    let first = Rec::Packet(
        id,
        Some("test:chat"),
        postcard(&Numbered { seq: 1, text: "a" }),
    );
    let second = Rec::Packet(
        id,
        Some("test:chat"),
        postcard(&Numbered { seq: 2, text: "b" }),
    );
    // Kept twice, the first packet comes again each time...
    assert_eq!(drain_with(&mut s, Take::Keep), std::slice::from_ref(&first));
    assert_eq!(drain_with(&mut s, Take::Keep), std::slice::from_ref(&first));
    // ...to plain `poll` too, and once consumed the next one follows.
    assert_eq!(drain(&mut s, T0), [first, second]);
    assert_eq!(drain_with(&mut s, Take::Consume), []);
}

#[test]
fn poll_with_keep_applies_to_packets_only() {
    connected!(s, c);
    c.close(CloseReason::UserRequest);
    let to_s = take_tx(&mut c);
    s.handle_input(&to_s);
    // A close is consumed whatever the closure returns.
    assert_eq!(
        drain_with(&mut s, Take::Keep),
        [Rec::Closed(CloseReason::UserRequest, Initiator::Peer)]
    );
    assert_eq!(drain_with(&mut s, Take::Keep), []);
}

#[test]
fn the_outbox_checks_rules_like_send() {
    connected!(s, c);
    // ToServer may only be sent by clients, and breaking that closes: the
    // server's outbox refuses it as `send` does, and closes.
    c.send::<Chat>(&Numbered { seq: 1, text: "a" }).unwrap();
    let to_s = take_tx(&mut c);
    s.handle_input(&to_s);
    let refused = s.poll_with(T0, |_, outbox| (Take::Consume, outbox.send::<ToServer>(&2)));
    assert!(
        matches!(refused, Some(Err(SendError::Rules { .. }))),
        "{refused:?}"
    );
    assert_eq!(
        drain(&mut s, T0),
        [Rec::Closed(
            CloseReason::SmartPacketInvalid,
            Initiator::Local
        )]
    );
}
