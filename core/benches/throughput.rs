//! Frames per second through a connection's receive and send paths, each beside
//! a bare baseline over the same bytes in the same run (see `README.md` here).
//!
//! Groups, one per direction and message size (`recv_32B`, `recv_1KiB`,
//! `send_32B`, `send_1KiB`):
//! - `recv_*/bare_split`: copy 4 KiB chunks into a buffer, read each length
//!   prefix, slice out header and body, compact the leftover. Nothing else.
//! - `recv_*/core_no_decode`: the same chunks through an ACTIVE client
//!   [`Connection`] (frame decoder, registry lookup, SmartPacket rules,
//!   [`Event::Packet`]), the body left encoded.
//! - `recv_*/core_postcard_decode`: as above plus `Incoming::decode::<P>()`.
//! - `send_*/bare_write`: write the 10-byte header and copy a pre-encoded body
//!   into a buffer of the connection's usable transmit size, flushing when full.
//! - `send_*/core_send_encoded`: `Connection::send_encoded` of that body.
//! - `send_*/core_send_postcard`: `Connection::send::<P>` of the message.
//!
//! `core/benches/ratios.py` turns criterion's estimates into the ratio table.

use core::hint::black_box;
use core::time::Duration;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{Config, Connection, Event, Incoming, SendError, CLOSE_RESERVE};
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::rules::Rules;
use peng3dnet_core::time::Instant;
use peng3dnet_core::wire::{FRAME_OVERHEAD, HEADER_LEN, LENGTH_PREFIX_LEN};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Approximate size of the byte stream one iteration processes.
const STREAM_BYTES: usize = 256 * 1024;
/// Bytes handed to the receiver per "read".
const CHUNK: usize = 4 * 1024;
/// Receive buffer of the connection and of the bare splitter.
const RX_BUF: usize = 16 * 1024;
/// Transmit buffer of the connection (the bare writer uses its usable part).
const TX_BUF: usize = 16 * 1024;
/// Registry capacity: the 5 internal packets and ours.
const REG: usize = 8;
const NOW: Instant = Instant::ZERO;

/// A server's connection: shares the server's registry.
type Server =
    Connection<'static, Postcard, [u8; RX_BUF], [u8; TX_BUF], REG, &'static Registry<REG>>;
/// A client's connection: adopts the server's ids into its own registry.
type Client =
    Connection<'static, Postcard, [u8; RX_BUF], [u8; TX_BUF], REG, &'static mut Registry<REG>>;

/// A body borrowed from the frame, encoded as postcard bytes (length + bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(d).map(Blob)
    }
}

/// A small state update; 32 bytes in postcard.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Small<'a> {
    seq: u32,
    pos: [f32; 3],
    flags: u16,
    name: &'a str,
}

/// A bulk message; 1024 bytes in postcard.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Big<'a> {
    seq: u32,
    #[serde(borrow)]
    data: Blob<'a>,
}

struct SmallPacket;
impl Packet for SmallPacket {
    const NAME: &'static str = "bench:state.small";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Small<'a>;
}

struct BigPacket;
impl Packet for BigPacket {
    const NAME: &'static str = "bench:bulk.big";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Big<'a>;
}

fn registry() -> Registry<REG> {
    let mut reg = Registry::new();
    reg.register::<SmallPacket>().unwrap();
    reg.register::<BigPacket>().unwrap();
    reg
}

fn boxed(n: usize) -> Box<[u8]> {
    vec![0u8; n].into_boxed_slice()
}

/// A server and a client connection, both ACTIVE after the classic handshake.
/// The registries are leaked: a few hundred bytes per pair.
fn connected_pair() -> (Server, Client) {
    let config = Config::new();
    let server_reg: &'static Registry<REG> = Box::leak(Box::new(registry()));
    let client_reg: &'static mut Registry<REG> = Box::leak(Box::new(registry()));
    let mut server = Connection::server(
        &config,
        server_reg,
        Postcard,
        [0u8; RX_BUF],
        [0u8; TX_BUF],
        NOW,
    )
    .unwrap();
    let mut client = Connection::client(
        &config,
        client_reg,
        Postcard,
        [0u8; RX_BUF],
        [0u8; TX_BUF],
        "classic",
        NOW,
    )
    .unwrap();
    for _ in 0..8 {
        let n = client.handle_input(server.poll_transmit());
        server.transmitted(n);
        while let Some(event) = client.poll(NOW) {
            assert!(matches!(event, Event::Connected), "{event:?}");
        }
        let n = server.handle_input(client.poll_transmit());
        client.transmitted(n);
        while let Some(event) = server.poll(NOW) {
            assert!(matches!(event, Event::Connected), "{event:?}");
        }
    }
    assert!(server.is_connected() && client.is_connected());
    assert!(server.poll_transmit().is_empty() && client.poll_transmit().is_empty());
    (server, client)
}

/// Hands everything queued to the "transport".
fn flush(conn: &mut Server, mut sink: impl FnMut(&[u8])) {
    let out = conn.poll_transmit();
    sink(out);
    let n = out.len();
    conn.transmitted(n);
}

/// Sends `frames` copies of `msg`, flushing whenever the buffer is full.
fn core_send<P: Packet>(
    conn: &mut Server,
    msg: &P::Message<'_>,
    frames: usize,
    mut sink: impl FnMut(&[u8]),
) {
    for _ in 0..frames {
        loop {
            match conn.send::<P>(msg) {
                Ok(()) => break,
                Err(SendError::WouldBlock { .. }) => flush(conn, &mut sink),
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    flush(conn, sink);
}

/// As [`core_send`], with the body encoded beforehand.
fn core_send_encoded(conn: &mut Server, id: u32, body: &[u8], frames: usize) {
    for _ in 0..frames {
        loop {
            match conn.send_encoded(id, body) {
                Ok(()) => break,
                Err(SendError::WouldBlock { .. }) => flush(conn, |b| {
                    black_box(b);
                }),
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    flush(conn, |b| {
        black_box(b);
    });
}

/// The baseline writer: header + body copy into a buffer, flushed when full.
fn bare_write(buf: &mut [u8], id: u32, body: &[u8], frames: usize) {
    let need = FRAME_OVERHEAD + body.len();
    let length = ((HEADER_LEN + body.len()) as u32).to_be_bytes();
    let mut end = 0;
    for _ in 0..frames {
        if buf.len() - end < need {
            black_box(&buf[..end]);
            end = 0;
        }
        let out = &mut buf[end..end + need];
        out[..4].copy_from_slice(&length);
        out[4..8].copy_from_slice(&id.to_be_bytes());
        out[8..10].copy_from_slice(&0u16.to_be_bytes());
        out[FRAME_OVERHEAD..].copy_from_slice(body);
        end += need;
    }
    black_box(&buf[..end]);
}

/// The baseline splitter: copy, read the length, slice header and body,
/// compact the leftover. Returns the frame count.
fn bare_split(buf: &mut [u8], stream: &[u8]) -> usize {
    let mut end = 0;
    let mut count = 0;
    for chunk in stream.chunks(CHUNK) {
        buf[end..end + chunk.len()].copy_from_slice(chunk);
        end += chunk.len();
        let mut start = 0;
        while end - start >= LENGTH_PREFIX_LEN {
            let prefix = [buf[start], buf[start + 1], buf[start + 2], buf[start + 3]];
            let total = LENGTH_PREFIX_LEN + u32::from_be_bytes(prefix) as usize;
            if end - start < total {
                break;
            }
            let header = &buf[start + LENGTH_PREFIX_LEN..start + FRAME_OVERHEAD];
            let body = &buf[start + FRAME_OVERHEAD..start + total];
            black_box((header, body));
            count += 1;
            start += total;
        }
        buf.copy_within(start..end, 0);
        end -= start;
    }
    count
}

/// The full receive path over the same chunks: read into the connection's
/// buffer, then poll until `None`. Returns the packet count.
fn core_recv(
    conn: &mut Client,
    stream: &[u8],
    mut on_packet: impl FnMut(&Incoming<&[u8], Postcard>),
) -> usize {
    let mut count = 0;
    for chunk in stream.chunks(CHUNK) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let space = conn.receive_buffer();
            let n = space.len().min(rest.len());
            assert!(n > 0, "receive buffer full");
            space[..n].copy_from_slice(&rest[..n]);
            conn.commit_received(n);
            rest = &rest[n..];
            while let Some(event) = conn.poll(NOW) {
                match event {
                    Event::Packet(incoming) => {
                        on_packet(&incoming);
                        count += 1;
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
    }
    count
}

/// What a server connection sends for `frames` copies of `msg`, as one stream.
fn server_stream<P: Packet>(msg: &P::Message<'_>, frames: usize) -> Vec<u8> {
    let (mut server, _client) = connected_pair();
    let mut stream = Vec::new();
    core_send::<P>(&mut server, msg, frames, |b| stream.extend_from_slice(b));
    stream
}

fn bench_size<P: Packet>(c: &mut Criterion, label: &str, msg: &P::Message<'_>) {
    let mut body = vec![0u8; 4096];
    let body_len = Postcard.encode(msg, &mut body).unwrap();
    body.truncate(body_len);
    let frame_len = FRAME_OVERHEAD + body_len;
    let frames = STREAM_BYTES / frame_len;
    let stream = server_stream::<P>(msg, frames);
    assert_eq!(stream.len(), frames * frame_len);

    // ---- receive ----
    let mut split_buf = boxed(RX_BUF);
    let (_server, mut client) = connected_pair();
    // Check once, untimed, that every variant sees every frame intact.
    assert_eq!(bare_split(&mut split_buf, &stream), frames);
    let mut again = vec![0u8; 4096];
    let decoded = core_recv(&mut client, &stream, |incoming| {
        let n = Postcard
            .encode(&incoming.decode::<P>().unwrap(), &mut again)
            .unwrap();
        assert_eq!(&again[..n], &body[..]);
    });
    assert_eq!(decoded, frames);

    let mut group = c.benchmark_group(format!("recv_{label}"));
    group.throughput(Throughput::Elements(frames as u64));
    group.bench_function("bare_split", |b| {
        b.iter(|| bare_split(&mut split_buf, black_box(&stream)))
    });
    group.bench_function("core_no_decode", |b| {
        b.iter(|| {
            core_recv(&mut client, black_box(&stream), |incoming| {
                black_box(incoming.body.len());
            })
        })
    });
    group.bench_function("core_postcard_decode", |b| {
        b.iter(|| {
            core_recv(&mut client, black_box(&stream), |incoming| {
                black_box(incoming.decode::<P>().unwrap());
            })
        })
    });
    group.finish();
    assert!(client.is_connected());

    // ---- send ----
    let (mut server, _client) = connected_pair();
    let id = server.registry().id_of::<P>().unwrap();
    let mut write_buf = boxed(TX_BUF - CLOSE_RESERVE);
    let mut group = c.benchmark_group(format!("send_{label}"));
    group.throughput(Throughput::Elements(frames as u64));
    group.bench_function("bare_write", |b| {
        b.iter(|| bare_write(&mut write_buf, id, black_box(&body), frames))
    });
    group.bench_function("core_send_encoded", |b| {
        b.iter(|| core_send_encoded(&mut server, id, black_box(&body), frames))
    });
    group.bench_function("core_send_postcard", |b| {
        b.iter(|| {
            core_send::<P>(&mut server, black_box(msg), frames, |b| {
                black_box(b);
            })
        })
    });
    group.finish();
    assert!(server.is_connected());
}

fn throughput(c: &mut Criterion) {
    let small = Small {
        seq: 1000,
        pos: [1.5, -2.25, 1024.0],
        flags: 7,
        name: "entity:012345678",
    };
    assert_eq!(Postcard.encoded_len(&small), Ok(32));
    bench_size::<SmallPacket>(c, "32B", &small);

    let data: Vec<u8> = (0..1020u32).map(|i| i as u8).collect();
    let big = Big {
        seq: 1000,
        data: Blob(&data),
    };
    assert_eq!(Postcard.encoded_len(&big), Ok(1024));
    bench_size::<BigPacket>(c, "1KiB", &big);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = throughput
}
criterion_main!(benches);
