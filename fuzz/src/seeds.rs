//! Seed inputs made from real frames: two core connections (a server and a
//! client) talk in memory, and what each writes is recorded. The example
//! `gen_corpus` writes these seeds to `fuzz/corpus/<target>/`.

use crate::{
    config, encode, frame, opt, other_registry, registry, Buf, Conn, Echo, Moved, Numbered, Plain,
    Reg, Script, Secret, Strict, ToClient, REG_N,
};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::messages::{
    CloseConn, HandshakeAccept, HandshakeOut, Hello, PeerInfo, PingRequest, SetType,
};
use peng3dnet_core::registry::Registry;
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Connection, Mode, SecurityLevel, State};
use peng3dnet_std::codec::{AnyCodec, MsgPack};

/// Something one side does in a recorded session.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// The client sends a packet (see [`send`]).
    Client(u8),
    /// The server sends a packet.
    Server(u8),
    /// The client closes with `userrequest`.
    CloseClient,
    /// The server closes with `servershutdown`.
    CloseServer,
    /// Both enter LOGGEDIN and mode PLAY.
    Play,
    /// The transport becomes encrypted.
    Encrypt,
}

/// What both connections wrote, in order.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Client to server.
    pub c2s: Vec<u8>,
    /// Server to client.
    pub s2c: Vec<u8>,
}

/// A session to record.
#[derive(Clone, Copy, Debug)]
pub struct Session<'s> {
    /// First option byte: the config of both sides (`opt::MSGPACK`: the
    /// server's codec).
    pub opts: u8,
    /// The client's connection type.
    pub conntype: &'s str,
    /// The server's registry has other names.
    pub other_server_registry: bool,
    /// What happens once connected.
    pub acts: &'s [Act],
}

fn send<C: Codec, G: peng3dnet_core::registry::RegistryAccess<REG_N>>(
    conn: &mut Conn<'_, '_, C, G>,
    what: u8,
) {
    let _ = match what {
        0 => conn.send::<Echo>(&"hello, echo"),
        1 => conn.send::<Plain>(&0xdead_beef),
        2 => conn.send::<Strict>(&Numbered {
            seq: 7,
            text: "strictly",
        }),
        3 => conn.send::<ToClient>(&42),
        4 => conn.send::<Secret>(&"secret"),
        5 => conn.send::<Moved>(&(-3, 4)),
        // Long and repetitive: compressed when the compressor is on.
        _ => conn.send::<Echo>(&"abcdefgh".repeat(40).as_str()),
    };
}

/// Runs a session between a core server and a core client and records it.
pub fn record(s: Session<'_>) -> Transcript {
    let cfg = config(s.opts & !opt::SHORT_TIMEOUT);
    let server_reg = if s.other_server_registry {
        other_registry()
    } else {
        registry()
    };
    let codec = if s.opts & opt::MSGPACK != 0 {
        AnyCodec::MsgPack
    } else {
        AnyCodec::Postcard
    };
    let (mut a, mut b, mut c, mut d) = (vec![0; 8192], vec![0; 8192], vec![0; 8192], vec![0; 8192]);
    let mut server: Conn<'_, '_, AnyCodec, &Registry<REG_N>> = Connection::server(
        &cfg,
        &server_reg,
        codec,
        Buf::Fixed(&mut a),
        Buf::Fixed(&mut b),
        Instant::ZERO,
    )
    .unwrap();
    let mut client: Conn<'_, '_, AnyCodec, Reg<'_>> = Connection::client(
        &cfg,
        Reg::Owned(registry()),
        AnyCodec::Postcard,
        Buf::Fixed(&mut c),
        Buf::Fixed(&mut d),
        s.conntype,
        Instant::ZERO,
    )
    .unwrap();
    let mut t = Transcript::default();
    let mut now = Instant::ZERO;
    let mut pump = |server: &mut Conn<'_, '_, AnyCodec, &Registry<REG_N>>,
                    client: &mut Conn<'_, '_, AnyCodec, Reg<'_>>,
                    t: &mut Transcript| {
        for _ in 0..8 {
            now = now + Duration::from_millis(3);
            let out = server.poll_transmit().to_vec();
            t.s2c.extend_from_slice(&out);
            server.transmitted(out.len());
            client.handle_input(&out);
            while client.poll(now).is_some() {}
            let out = client.poll_transmit().to_vec();
            t.c2s.extend_from_slice(&out);
            client.transmitted(out.len());
            server.handle_input(&out);
            while server.poll(now).is_some() {}
        }
    };
    pump(&mut server, &mut client, &mut t);
    for act in s.acts {
        match *act {
            Act::Client(w) => send(&mut client, w),
            Act::Server(w) => send(&mut server, w),
            Act::CloseClient => client.close(CloseReason::UserRequest),
            Act::CloseServer => server.close(CloseReason::ServerShutdown),
            Act::Play => {
                server.set_mode(Mode::PLAY);
                client.set_mode(Mode::PLAY);
                server.set_state(State::LoggedIn);
                client.set_state(State::LoggedIn);
            }
            Act::Encrypt => {
                server.set_security_level(SecurityLevel::Encrypted);
                client.set_security_level(SecurityLevel::Encrypted);
            }
        }
        pump(&mut server, &mut client, &mut t);
    }
    t
}

/// The frames of a stream, each as its own bytes.
pub fn split_frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let (frames, _) = crate::parse_stream(stream, u32::MAX as usize);
    frames
        .iter()
        .map(|f| frame(f.packet_id, f.flags.0, f.body))
        .collect()
}

const ALL_SENDS: &[Act] = &[
    Act::Client(0),
    Act::Server(0),
    Act::Client(1),
    Act::Server(1),
    Act::Client(2),
    Act::Server(3),
    Act::Client(6),
    Act::Server(6),
    Act::Play,
    Act::Client(5),
    Act::Server(5),
    Act::Encrypt,
    Act::Client(4),
    Act::Server(4),
];

/// The sessions the seeds come from.
pub fn sessions() -> Vec<(&'static str, Session<'static>)> {
    let mut v = Vec::new();
    for (codec_name, codec) in [("postcard", 0), ("msgpack", opt::MSGPACK)] {
        let list: [(&str, Session); 8] = [
            (
                "classic-close-client",
                Session {
                    opts: codec,
                    conntype: "classic",
                    other_server_registry: false,
                    acts: &[Act::Client(0), Act::Server(0), Act::CloseClient],
                },
            ),
            (
                "classic-all-close-server",
                Session {
                    opts: codec,
                    conntype: "classic",
                    other_server_registry: false,
                    acts: &[
                        Act::Client(0),
                        Act::Server(0),
                        Act::Client(1),
                        Act::Server(1),
                        Act::Client(2),
                        Act::Server(3),
                        Act::Client(6),
                        Act::Server(6),
                        Act::Play,
                        Act::Client(5),
                        Act::Server(5),
                        Act::Encrypt,
                        Act::Client(4),
                        Act::Server(4),
                        Act::CloseServer,
                    ],
                },
            ),
            (
                "classic-compressed",
                Session {
                    opts: codec | opt::COMPRESS,
                    conntype: "classic",
                    other_server_registry: false,
                    acts: ALL_SENDS,
                },
            ),
            (
                "classic-open",
                Session {
                    opts: codec,
                    conntype: "classic",
                    other_server_registry: false,
                    acts: &[Act::Client(1), Act::Server(1), Act::Client(0)],
                },
            ),
            (
                "classic-regmismatch",
                Session {
                    opts: codec,
                    conntype: "classic",
                    other_server_registry: true,
                    acts: &[],
                },
            ),
            (
                "classic-sync-ignore",
                Session {
                    opts: codec | opt::SYNC_IGNORE,
                    conntype: "classic",
                    other_server_registry: true,
                    acts: &[Act::Client(0), Act::Server(1)],
                },
            ),
            (
                "ping",
                Session {
                    opts: codec,
                    conntype: "ping",
                    other_server_registry: false,
                    acts: &[],
                },
            ),
            (
                "custom",
                Session {
                    opts: codec,
                    conntype: "fuzz",
                    other_server_registry: false,
                    acts: &[
                        Act::Client(0),
                        Act::Client(1),
                        Act::Client(2),
                        Act::Server(0),
                        Act::Server(3),
                        Act::Server(2),
                        Act::CloseClient,
                    ],
                },
            ),
        ];
        for (name, s) in list {
            v.push((leak(format!("{name}-{codec_name}")), s));
        }
    }
    v
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Fragmentation/action step lists used with the recorded streams.
pub fn step_variants() -> Vec<(&'static str, Vec<(u8, u8)>)> {
    vec![
        ("whole", vec![]),
        ("bytes", vec![(1, 0)]),
        ("odd", vec![(3, 0x20), (7, 0x40), (1, 0x60), (13, 0x80)]),
        (
            "sends",
            vec![(5, 1), (9, 2), (11, 4), (8, 6), (30, 0), (6, 5), (4, 3)],
        ),
        ("slow", vec![(2, 0x10), (40, 0x18), (1, 0x08)]),
        ("close", vec![(10, 0), (10, 0), (12, 7)]),
    ]
}

/// `(target, name, bytes)` for every seed.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let sessions = sessions();
    let variants = step_variants();
    let mut streams = Vec::new();
    for (si, (name, s)) in sessions.iter().enumerate() {
        let t = record(*s);
        let conntype_bits = match s.conntype {
            "ping" => 1,
            "fuzz" => 2,
            _ => 0,
        };
        // Server: the client's bytes from the start.
        // Client: the server's bytes after its hello (the target sends a hello
        // of its own first).
        let s2c_frames = split_frames(&t.s2c);
        let after_hello: Vec<u8> = s2c_frames.iter().skip(1).flatten().copied().collect();
        let (vi, (vname, steps)) = (si % variants.len(), &variants[si % variants.len()]);
        let rx = (si % 3) as u8 + 1; // 256, 1024, 8192
        let tx = ((si / 3) % 3) as u8 + 1;
        let o1 = rx
            | (tx << 2)
            | if si % 4 == 1 { 0x10 } else { 0 }
            | if si % 5 == 2 { 0x40 } else { 0 };
        for (target, data) in [("server_conn", &t.c2s), ("client_conn", &after_hello)] {
            out.push((
                target,
                name.to_string(),
                Script::encode([s.opts, 0x0f, conntype_bits], &[], data),
            ));
            out.push((
                target,
                format!("{name}-{vname}"),
                Script::encode(
                    [s.opts, o1, conntype_bits | if vi % 2 == 1 { 4 } else { 0 }],
                    steps,
                    data,
                ),
            ));
        }
        streams.push((name.to_string(), t));
    }
    // The transport ending right after the last bytes; the client from the
    // server's first byte (its own hello).
    for ((_, s), (name, t)) in sessions.iter().zip(&streams).step_by(3) {
        let ct = match s.conntype {
            "ping" => 1,
            "fuzz" => 2,
            _ => 0,
        };
        let after_hello: Vec<u8> = split_frames(&t.s2c)
            .iter()
            .skip(1)
            .flatten()
            .copied()
            .collect();
        out.push((
            "server_conn",
            format!("{name}-end-early"),
            Script::encode([s.opts, 0x0f, 0x80], &[(40, 0)], &t.c2s),
        ));
        // Events through `poll_with`, every other packet kept.
        out.push((
            "server_conn",
            format!("{name}-in-place"),
            Script::encode([s.opts, 0x0f, 0x40], &[(40, 0)], &t.c2s),
        ));
        out.push((
            "client_conn",
            format!("{name}-end-early"),
            Script::encode([s.opts, 0x0f, ct | 0x80], &[(40, 0)], &after_hello),
        ));
        out.push((
            "client_conn",
            format!("{name}-from-start"),
            Script::encode([s.opts, 0x0f, ct | 0x40], &[], &t.s2c),
        ));
    }
    // A few more fragmentations of the main sessions.
    for (name, t) in streams.iter().take(2) {
        let after_hello: Vec<u8> = split_frames(&t.s2c)
            .iter()
            .skip(1)
            .flatten()
            .copied()
            .collect();
        for (vname, steps) in &variants {
            out.push((
                "server_conn",
                format!("{name}-x-{vname}"),
                Script::encode([0, 0x0a, 0], steps, &t.c2s),
            ));
            out.push((
                "client_conn",
                format!("{name}-x-{vname}"),
                Script::encode([0, 0x0a, 0], steps, &after_hello),
            ));
        }
    }

    // frame_decoder: streams in both directions, with fragment lengths.
    let lens: [&[u8]; 4] = [&[], &[1], &[3, 1, 4, 1, 5, 9, 2, 6], &[17, 0, 200]];
    for (i, (name, t)) in streams.iter().enumerate().step_by(2) {
        for (dir, stream) in [("c2s", &t.c2s), ("s2c", &t.s2c)] {
            let l = lens[i / 2 % lens.len()];
            let o =
                (i % 4) as u8 | if i % 3 == 0 { 4 } else { 0 } | if dir == "s2c" { 8 } else { 0 };
            let mut v = vec![o, l.len() as u8];
            v.extend_from_slice(l);
            v.extend_from_slice(stream);
            out.push(("frame_decoder", format!("{name}-{dir}"), v));
        }
    }
    let bad: [(&str, Vec<u8>); 5] = [
        (
            "tooshort",
            [frame(64, 0, b"ok"), vec![0, 0, 0, 5, 1, 2, 3, 4, 5]].concat(),
        ),
        (
            "toolarge",
            [frame(64, 0, b"ok"), vec![0, 0, 0x10, 0, 0, 0, 0, 64]].concat(),
        ),
        (
            "unknownflags",
            [frame(64, 0, b"ok"), frame(65, 4, b"x")].concat(),
        ),
        (
            "aes",
            [
                frame(64, 1, b"ok"),
                frame(65, 2, b"x"),
                frame(66, 0, b"after"),
            ]
            .concat(),
        ),
        (
            "empty-bodies",
            [frame(1, 0, b""), frame(2, 0, b""), frame(u32::MAX, 1, b"")].concat(),
        ),
    ];
    for (name, stream) in &bad {
        let mut v = vec![1, 3, 2, 5, 1];
        v.extend_from_slice(stream);
        out.push(("frame_decoder", name.to_string(), v));
        let mut v = vec![0x0c, 0];
        v.extend_from_slice(stream);
        out.push(("frame_decoder", format!("{name}-heap"), v));
    }
    // The connection targets get the broken streams too.
    for (name, stream) in &bad {
        out.push((
            "server_conn",
            format!("bad-{name}"),
            Script::encode([0, 1, 0], &[], stream),
        ));
    }

    // codec_messages: every internal message body, in both codecs.
    let reg = registry();
    let mut msgs: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let v = &mut msgs;
        macro_rules! both {
            ($name:expr, $msg:expr) => {
                v.push((format!("{}-postcard", $name), encode(&Postcard, &$msg)));
                v.push((format!("{}-msgpack", $name), encode(&MsgPack, &$msg)));
            };
        }
        both!(
            "hello",
            Hello {
                version: "0.1.3a0",
                protoversion: 2
            }
        );
        both!(
            "hello-v3",
            Hello {
                version: "",
                protoversion: 3
            }
        );
        both!(
            "settype-classic",
            SetType {
                conntype: "classic"
            }
        );
        both!("settype-ping", SetType { conntype: "ping" });
        both!("accept", HandshakeAccept { success: true });
        both!("refuse", HandshakeAccept { success: false });
        both!(
            "closeconn",
            CloseConn {
                reason: Some("userrequest")
            }
        );
        both!("closeconn-nil", CloseConn { reason: None });
        both!("ping", PingRequest { time: 1234.5 });
        both!(
            "peerinfo",
            PeerInfo {
                version: "1",
                release: "r",
                protoversion: 2
            }
        );
        both!(
            "handshake",
            HandshakeOut {
                version: "0.1.3a0",
                protoversion: 2,
                registry: reg.as_map()
            }
        );
        let other = other_registry();
        both!(
            "handshake-other",
            HandshakeOut {
                version: "x",
                protoversion: 2,
                registry: other.as_map()
            }
        );
    }
    for (name, body) in msgs {
        out.push(("codec_messages", name, body));
    }
    // The Python reference's settype without a conntype: {}.
    out.push(("codec_messages", "settype-empty-map".into(), vec![0x80]));

    // inflate: raw zlib bodies (mode 0) and plain data to compress (mode 1).
    let zlib = |data: &[u8], level: u8| miniz_oxide::deflate::compress_to_vec_zlib(data, level);
    let text = b"peng3dnet ".repeat(30);
    let raw: [(&str, Vec<u8>); 5] = [
        ("text", zlib(&text, 6)),
        ("stored", zlib(b"stored block, no compression", 0)),
        ("short", zlib(b"x", 9)),
        ("bomb", zlib(&vec![0u8; 100_000], 9)),
        (
            "msgpack-echo",
            zlib(&encode(&MsgPack, &"abcdefgh".repeat(40).as_str()), 6),
        ),
    ];
    for (i, (name, body)) in raw.iter().enumerate() {
        for sel in [0u8, 1, 2] {
            let o = ((i as u8 % 4) << 1) | if i % 2 == 1 { 8 } else { 0 };
            let mut v = vec![o, sel];
            v.extend_from_slice(body);
            out.push(("inflate", format!("raw-{name}-{sel}"), v));
        }
    }
    let plain: [(&str, Vec<u8>); 4] = [
        ("text", text.clone()),
        (
            "postcard-echo",
            encode(&Postcard, &"abcdefgh".repeat(40).as_str()),
        ),
        (
            "closeconn",
            encode(
                &Postcard,
                &CloseConn {
                    reason: Some("command"),
                },
            ),
        ),
        ("zeros", vec![0u8; 3000]),
    ];
    for (i, (name, data)) in plain.iter().enumerate() {
        let sel = if *name == "closeconn" { 2 } else { i as u8 % 2 };
        let o = 1 | (((i as u8 + 1) % 4) << 1) | ((i as u8 % 8) << 5);
        let mut v = vec![o, sel];
        v.extend_from_slice(data);
        out.push(("inflate", format!("plain-{name}"), v));
    }
    // Compressed frames recorded in a session.
    for (name, t) in &streams {
        if !name.starts_with("classic-compressed") {
            continue;
        }
        for stream in [&t.c2s, &t.s2c] {
            let (frames, _) = crate::parse_stream(stream, u32::MAX as usize);
            for f in frames.iter().filter(|f| f.flags.0 == 1).take(2) {
                let o = 2 | if name.ends_with("msgpack") { 16 } else { 0 };
                let mut v = vec![o, 1];
                v.extend_from_slice(f.body);
                out.push(("inflate", format!("{name}-{}", f.packet_id), v));
            }
        }
    }
    // Deduplicate names per target.
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}
