//! zlib inflate into a bounded buffer: a connected server receives a
//! compressed frame whose body is the input (mode 0), or the input
//! compressed by the std adapter's `Zlib` (mode 1, to reach deep paths).
//! Checked against miniz_oxide's own inflater: a body whose whole inflated
//! size fits the room to inflate (a fixed receive buffer: its free space
//! after the frame; a growable one: the largest frame body, whatever else is
//! buffered) and that has no bytes after its zlib stream is delivered
//! exactly; any other closes with `decompressionfailed`; no packet is ever
//! larger than the buffer. A plain frame after it must still arrive intact.
//!
//! Input: `opts sel data...`. `opts` bit 0: mode; bits 1-2: receive size
//! (64, 300, 1024, 4096); bit 3: growable receive buffer; bit 4: MessagePack;
//! bits 5-7: compression level (mode 1). `sel % 5`: packet id (plain 65,
//! echo 64, closeconn 16, unknown 200, hello 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::connection::{Compressor, IgnoreCause};
use peng3dnet_core::messages::{CloseConn, HandshakeAccept, SetType};
use peng3dnet_core::registry::Packet;
use peng3dnet_core::time::Instant;
use peng3dnet_core::wire::FRAME_OVERHEAD;
use peng3dnet_core::{CloseReason, Closed, Connection, Event, Initiator};
use peng3dnet_fuzz::{check_close, config, encode, frame, registry, Buf, Echo, Plain};
use peng3dnet_std::buffer::HeapBuffer;
use peng3dnet_std::codec::{AnyCodec, Zlib};

const RX: [usize; 4] = [64, 300, 1024, 4096];

#[derive(Debug, PartialEq)]
enum Seen {
    Packet(u32, Vec<u8>),
    Ignored(u32, bool),
    Closed(CloseReason, Initiator),
}

fuzz_target!(|input: &[u8]| {
    let [o, sel, ref data @ ..] = *input else {
        return;
    };
    let rx_size = RX[((o >> 1) & 3) as usize];
    let codec = if o & 16 != 0 {
        AnyCodec::MsgPack
    } else {
        AnyCodec::Postcard
    };
    let pid = [Plain::ID.unwrap_or(65), 64, 16, 200, 1][(sel % 5) as usize];
    let body = if o & 1 == 0 {
        data.to_vec()
    } else {
        let z = Zlib {
            threshold: 0,
            level: (o >> 5) as u32 + 2,
        };
        let mut out = vec![0u8; data.len() * 2 + 64];
        let n = z.compress(data, &mut out).expect("compress");
        out.truncate(n);
        out
    };

    let cfg = config(0);
    let reg = registry();
    assert_eq!(reg.id_of::<Plain>(), Some(65));
    assert_eq!(reg.id_of::<Echo>(), Some(64));
    let (mut rx_store, mut tx_store) = (vec![0u8; rx_size], vec![0u8; 1024]);
    let rx = if o & 8 != 0 {
        Buf::Heap(HeapBuffer::new(rx_size, 0))
    } else {
        Buf::Fixed(&mut rx_store)
    };
    let mut server = Connection::server(
        &cfg,
        &reg,
        codec,
        rx,
        Buf::Fixed(&mut tx_store),
        Instant::ZERO,
    )
    .unwrap();
    // The client's side of the handshake, then connected.
    let hs = [
        frame(
            2,
            0,
            &encode(
                &codec,
                &SetType {
                    conntype: "classic",
                },
            ),
        ),
        frame(4, 0, &encode(&codec, &HandshakeAccept { success: true })),
    ]
    .concat();
    assert_eq!(server.handle_input(&hs), hs.len());
    let mut connected = false;
    while let Some(ev) = server.poll(Instant::ZERO) {
        connected |= matches!(ev, Event::Connected);
    }
    assert!(connected && server.is_connected());
    let n = server.poll_transmit().len();
    server.transmitted(n);

    // The compressed frame, and what it must turn into.
    let compressed = frame(pid, 1, &body);
    let fits = compressed.len() <= rx_size;
    let limit = if o & 8 != 0 {
        rx_size - FRAME_OVERHEAD
    } else {
        rx_size.saturating_sub(compressed.len())
    };
    let inflated = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&body, limit + 1)
        .ok()
        .filter(|v| v.len() <= limit && !trailing_bytes(&body));
    if o & 1 != 0 && data.len() <= limit {
        assert_eq!(inflated.as_deref(), Some(data), "zlib round trip");
    }
    let mut seen = Vec::new();
    let mut rest = &compressed[..];
    while !rest.is_empty() && !server.is_closed() {
        let n = server.handle_input(rest);
        rest = &rest[n..];
        poll(&mut server, &mut seen, rx_size);
        if n == 0 {
            break;
        }
    }
    let expected = if !fits {
        Seen::Closed(CloseReason::FrameTooLarge, Initiator::Local)
    } else {
        match (&inflated, pid) {
            (None, _) => Seen::Closed(CloseReason::DecompressionFailed, Initiator::Local),
            (Some(v), 64 | 65) => Seen::Packet(pid, v.clone()),
            (Some(v), 16) => {
                let reason = codec
                    .decode::<CloseConn>(v)
                    .map_or(CloseReason::Unspecified, |c| {
                        CloseReason::from_wire(c.reason)
                    });
                Seen::Closed(reason, Initiator::Peer)
            }
            (Some(_), 200) => Seen::Ignored(200, true),
            (Some(_), _) => Seen::Ignored(pid, false),
        }
    };
    assert_eq!(
        seen.first(),
        Some(&expected),
        "{} body bytes, limit {limit}",
        body.len()
    );
    assert_eq!(seen.len(), 1, "{seen:?}");

    // A plain frame after it arrives intact.
    if !server.is_closed() {
        let after = frame(65, 0, &encode(&codec, &0x0102_0304u32));
        assert_eq!(server.handle_input(&after), after.len());
        seen.clear();
        poll(&mut server, &mut seen, rx_size);
        assert_eq!(seen, [Seen::Packet(65, after[FRAME_OVERHEAD..].to_vec())]);
    }
});

fn poll<C: Codec>(
    server: &mut Connection<
        '_,
        C,
        Buf<'_>,
        Buf<'_>,
        { peng3dnet_fuzz::REG_N },
        &peng3dnet_core::registry::Registry<{ peng3dnet_fuzz::REG_N }>,
    >,
    seen: &mut Vec<Seen>,
    rx_size: usize,
) {
    while let Some(ev) = server.poll(Instant::ZERO) {
        seen.push(match ev {
            Event::Packet(inc) => {
                assert!(
                    inc.body.len() + FRAME_OVERHEAD <= rx_size,
                    "a packet past the buffer"
                );
                let _ = inc.decode::<Plain>();
                let _ = inc.decode::<Echo>();
                Seen::Packet(inc.packet_id, inc.body.to_vec())
            }
            Event::Ignored { packet_id, cause } => {
                Seen::Ignored(packet_id, cause == IgnoreCause::UnknownId)
            }
            Event::Closed(Closed { reason, initiator }) => {
                check_close(&reason, initiator);
                Seen::Closed(reason, initiator)
            }
            _ => panic!("an unexpected event"),
        });
    }
}

/// Whether bytes follow the end of the zlib stream `body` (false when it
/// never ends or is invalid: the oracle refuses those anyway).
fn trailing_bytes(body: &[u8]) -> bool {
    use miniz_oxide::inflate::stream::{inflate, InflateState};
    use miniz_oxide::{DataFormat, MZFlush, MZStatus};
    let mut state = InflateState::new_boxed(DataFormat::Zlib);
    let mut out = vec![0u8; 1 << 16];
    let mut consumed = 0;
    for _ in 0..100_000 {
        let r = inflate(&mut state, &body[consumed..], &mut out, MZFlush::None);
        consumed += r.bytes_consumed;
        match r.status {
            Ok(MZStatus::StreamEnd) => return consumed < body.len(),
            Ok(_) if r.bytes_consumed == 0 && r.bytes_written == 0 => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}
