//! Growable caller buffers: a connection over buffers that start empty grows
//! them only while a frame needs the room, never past their maximum, and gives
//! the memory back when nothing is buffered.

use peng3dnet_core::buffer::Buffer;
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::registry::Registry;
use peng3dnet_core::time::Instant;
use peng3dnet_core::wire::{encode_frame, Flags, FrameDecoder, FrameError};
use peng3dnet_core::{CloseReason, Connection, Event};
use peng3dnet_test_support::{config, registry, Chat, GrowBuf, Numbered, Plain, CAP};

type GrowConn<'a, G = &'a Registry<CAP>> = Connection<'a, Postcard, GrowBuf, GrowBuf, CAP, G>;
/// A client owning its registry: the connection borrows nothing but the config.
type OwningClient<'a> = GrowConn<'a, Registry<CAP>>;

#[test]
fn decoder_grows_for_a_frame_and_releases_after() {
    let mut dec = FrameDecoder::new(GrowBuf::new(10_000, 64));
    assert_eq!(dec.buffer().bytes().len(), 0);
    let mut frame = vec![0u8; 5010];
    encode_frame(&mut frame, 70, Flags::EMPTY, &[7u8; 5000]).unwrap();
    // Byte by byte: the buffer grows to the frame, not beyond.
    for (i, b) in frame.iter().enumerate() {
        assert_eq!(dec.feed(core::slice::from_ref(b)), 1, "byte {i}");
    }
    assert!(dec.buffer().bytes().len() <= 5010 + 64);
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(f.body.len(), 5000);
    // Empty again: the next request for room releases the memory first.
    assert_eq!(dec.buffered(), 0);
    let _ = dec.free_space();
    assert!(dec.buffer().releases >= 1);
    assert!(dec.buffer().bytes().len() <= 64);
    // The maximum still bounds frames.
    let mut dec = FrameDecoder::new(GrowBuf::new(100, 64));
    dec.feed(&97u32.to_be_bytes());
    assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn decoder_memory_follows_bytes_received_not_announced() {
    // A length prefix of 1 MiB and 1,100 bytes of it: the buffer holds about
    // what arrived (at most twice), not the announced frame.
    let max = (1 << 20) + 4;
    let mut dec = FrameDecoder::new(GrowBuf::new(max, 64));
    let mut head = (1u32 << 20).to_be_bytes().to_vec();
    head.extend_from_slice(&[0, 0, 0, 70, 0, 0]);
    head.resize(1100, 9);
    let mut fed = 0;
    for chunk in head.chunks(100) {
        let mut taken = 0;
        for _ in 0..100 {
            if taken == chunk.len() {
                break;
            }
            taken += dec.feed(&chunk[taken..]);
        }
        fed += taken;
        assert!(
            dec.buffer().bytes().len() <= 2 * fed + 64,
            "{} bytes held for {fed} received",
            dec.buffer().bytes().len()
        );
    }
    assert_eq!(fed, 1100);
    assert!(matches!(dec.next_frame(), Ok(None)));
    // The rest arrives: the frame is whole and the buffer within the maximum.
    let mut rest = vec![5u8; (1 << 20) + 4 - 1100];
    let mut off = 0;
    for _ in 0..1000 {
        if off == rest.len() {
            break;
        }
        off += dec.feed(&rest[off..]);
    }
    assert_eq!(off, rest.len());
    assert!(dec.buffer().bytes().len() <= max);
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!((f.packet_id, f.body.len()), (70, (1 << 20) - 6));
    rest.clear();
}

#[test]
fn connections_over_growable_buffers() {
    let cfg = config();
    let sreg = registry();
    let now = Instant::ZERO;
    let max = 64 * 1024;
    let mut s: GrowConn<'_> = Connection::server(
        &cfg,
        &sreg,
        Postcard,
        GrowBuf::new(max, 256),
        GrowBuf::new(max, 256),
        now,
    )
    .unwrap();
    let mut c: OwningClient<'_> = Connection::client(
        &cfg,
        registry(),
        Postcard,
        GrowBuf::new(max, 256),
        GrowBuf::new(max, 256),
        "classic",
        now,
    )
    .unwrap();
    let mut got = Vec::new();
    let pump = |s: &mut GrowConn<'_>, c: &mut OwningClient<'_>, got: &mut Vec<usize>| {
        // Enough rounds for a buffer that doubles from 256 B to 64 KiB.
        for _ in 0..24 {
            let n = c.handle_input(s.poll_transmit());
            s.transmitted(n);
            while let Some(ev) = c.poll(now) {
                if let Event::Packet(p) = ev {
                    got.push(p.body.len());
                }
            }
            let n = s.handle_input(c.poll_transmit());
            c.transmitted(n);
            while let Some(ev) = s.poll(now) {
                let _ = ev;
            }
        }
    };
    pump(&mut s, &mut c, &mut got);
    assert!(s.is_connected() && c.is_connected());
    // A large packet grows the buffers; afterwards they are released.
    let big = vec![1u8; 40_000];
    s.send::<Plain>(&big.as_slice()).unwrap();
    pump(&mut s, &mut c, &mut got);
    assert_eq!(got.len(), 1);
    assert!(got[0] > 40_000);
    assert!(c.poll_transmit().is_empty() && s.poll_transmit().is_empty());
    let _ = c.receive_buffer();
    let _ = s.receive_buffer();
    // Idle: no buffer keeps its peak size.
    for (rx, tx) in [s.buffers(), c.buffers()] {
        assert!(rx.bytes().len() <= 256, "rx holds {}", rx.bytes().len());
        assert!(tx.bytes().is_empty(), "tx holds {}", tx.bytes().len());
        assert!(rx.grows + tx.grows > 0);
    }
    assert!(c.buffers().0.releases >= 1);
    assert_eq!(c.codec(), &Postcard);
    // Over the maximum: refused, nothing queued.
    let huge = vec![1u8; max];
    assert!(matches!(
        s.send::<Plain>(&huge.as_slice()),
        Err(SendError::TooLarge { .. })
    ));
    assert!(s.poll_transmit().is_empty());
    s.send::<Chat>(&Numbered {
        seq: 1,
        text: "small",
    })
    .unwrap();
    s.close(CloseReason::ServerShutdown);
    pump(&mut s, &mut c, &mut got);
    assert_eq!(got.len(), 2);
    assert!(s.is_finished() && c.is_finished());
}
