//! The frame decoder fed a stream in fragments, compared with a reference
//! parser of the whole stream.
//!
//! Input: `opts nlens len{nlens % 17} stream...`. `opts` bits 0-1: capacity
//! (16, 64, 300, 4096 bytes); bit 2: the std adapter's growable buffer
//! instead of a fixed one; bit 3: read through `free_space` + `commit`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peng3dnet_core::buffer::Buffer;
use peng3dnet_core::wire::{FrameDecoder, FrameError, FRAME_OVERHEAD};
use peng3dnet_fuzz::{parse_stream, Buf, StreamEnd};
use peng3dnet_std::buffer::HeapBuffer;

const CAPACITIES: [usize; 4] = [16, 64, 300, 4096];

fuzz_target!(|input: &[u8]| {
    let Some((&o, rest)) = input.split_first() else {
        return;
    };
    let (n, rest) = rest
        .split_first()
        .map_or((0, rest), |(&n, r)| (n as usize % 17, r));
    let n = n.min(rest.len());
    let (lens, stream) = rest.split_at(n);
    let cap = CAPACITIES[(o & 3) as usize];
    let mut fixed = vec![0u8; cap];
    let buf = if o & 4 != 0 {
        Buf::Heap(HeapBuffer::new(cap, 32))
    } else {
        Buf::Fixed(&mut fixed)
    };
    run(FrameDecoder::new(buf), lens, stream, o & 8 != 0);
});

fn fragments<'a>(lens: &[u8], stream: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let len = if lens.is_empty() || i >= 4096 {
            stream.len() - pos
        } else {
            // 0 means "the rest".
            match lens[i % lens.len()] as usize {
                0 => stream.len() - pos,
                l => l.min(stream.len() - pos),
            }
        };
        out.push(&stream[pos..pos + len]);
        pos += len;
        i += 1;
    }
    out
}

fn run(mut dec: FrameDecoder<Buf<'_>>, lens: &[u8], stream: &[u8], zero_copy: bool) {
    let cap = dec.capacity();
    assert_eq!(dec.max_frame_len(), cap - 4);
    let (expected, end) = parse_stream(stream, cap - 4);
    let mut got = 0usize;
    let mut error: Option<FrameError> = None;
    'outer: for fragment in fragments(lens, stream) {
        let mut rest = fragment;
        while !rest.is_empty() {
            let n = if zero_copy {
                let space = dec.free_space();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                dec.commit(n);
                n
            } else {
                dec.feed(rest)
            };
            assert!(n <= rest.len());
            assert!(
                dec.buffered() <= cap,
                "buffered {} > capacity {cap}",
                dec.buffered()
            );
            assert!(
                dec.buffer().bytes().len() <= cap,
                "storage past its capacity"
            );
            rest = &rest[n..];
            loop {
                let has = dec.has_frame();
                match dec.next_frame() {
                    Ok(Some(f)) => {
                        assert!(has, "has_frame false before a frame");
                        assert!(
                            f.body.len() + FRAME_OVERHEAD <= cap,
                            "body past the capacity"
                        );
                        let want = expected
                            .get(got)
                            .unwrap_or_else(|| panic!("frame {got} not in the stream: {f:?}"));
                        assert_eq!(
                            (f.packet_id, f.flags, f.body),
                            (want.packet_id, want.flags, want.body),
                            "frame {got}"
                        );
                        got += 1;
                    }
                    Ok(None) => {
                        assert!(!has, "has_frame true but no frame");
                        break;
                    }
                    Err(e) => {
                        assert!(has, "has_frame false before an error");
                        error = Some(e);
                        break 'outer;
                    }
                }
            }
            if n == 0 {
                panic!(
                    "stalled: no room, no frame, no error ({} buffered of {cap})",
                    dec.buffered()
                );
            }
        }
    }
    assert_eq!(got, expected.len(), "frames missing");
    match (end, error) {
        (StreamEnd::Error(want), Some(e)) => {
            assert_eq!(e, want);
            // Sticky: the same error again, no more room, nothing taken.
            assert_eq!(dec.error(), Some(e));
            assert_eq!(dec.next_frame(), Err(e));
            assert!(dec.has_frame());
            assert!(dec.free_space().is_empty());
            assert_eq!(dec.feed(b"\0\0\0\x0a\0\0\0\x40\0\0more"), 0);
            dec.commit(5);
            assert_eq!(dec.next_frame(), Err(e));
            assert_eq!(dec.error(), Some(e));
        }
        (StreamEnd::Partial(left), None) => {
            assert_eq!(dec.buffered(), left, "bytes of the last partial frame");
            assert_eq!(dec.error(), None);
            assert!(!dec.has_frame());
        }
        (end, error) => panic!("stream ends with {end:?}, decoder with {error:?}"),
    }
}
