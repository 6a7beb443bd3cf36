//! Compressed frames both ways between core connections with the std
//! adapter's compressor (`peng3dnet_std::codec::Zlib`: the core has none of
//! its own), and the bound on inflation. Moved out of the core's
//! `rules_and_closes.rs` because it needs peng3dnet-std.

use peng3dnet_core::{CloseReason, Config, Initiator};
use peng3dnet_test_support::{
    config, drain, exchange, frame, frames_of, pair, postcard, registry, take_tx, Chat, Numbered,
    Rec, BUF, T0,
};

#[test]
fn compression_both_ways_and_bounded_inflation() {
    let cfg = Config {
        compressor: Some(&peng3dnet_std::codec::ZLIB_DEFAULT),
        ..config()
    };
    let sreg = registry();
    let mut creg = registry();
    pair!(cfg, sreg, creg, s, c, "classic");
    exchange(&mut s, &mut c);
    // 3,000 bytes stay plain (threshold 8,192 is above the buffer anyway:
    // BUF is 4 KiB), so use a compressor with a low threshold.
    let low = peng3dnet_std::codec::Zlib {
        threshold: 100,
        level: 6,
    };
    let cfg2 = Config {
        compressor: Some(&low),
        ..config()
    };
    let sreg2 = registry();
    let mut creg2 = registry();
    pair!(cfg2, sreg2, creg2, s2, c2, "classic");
    exchange(&mut s2, &mut c2);
    let text = "z".repeat(3000);
    c2.send::<Chat>(&Numbered {
        seq: 1,
        text: &text,
    })
    .unwrap();
    let wire = take_tx(&mut c2);
    let frames = frames_of(&wire);
    assert_eq!(frames[0].1, 1, "the frame is compressed");
    assert!(
        wire.len() < 200,
        "3,000 bytes of z compress well: {}",
        wire.len()
    );
    s2.handle_input(&wire);
    match &drain(&mut s2, T0)[..] {
        [Rec::Packet(_, Some("test:chat"), body)] => {
            assert_eq!(
                *body,
                postcard(&Numbered {
                    seq: 1,
                    text: &text
                })
            );
        }
        other => panic!("{other:?}"),
    }
    // A zlib bomb: 1 MiB of zeros in a small frame inflates past the 4 KiB
    // receive buffer and is refused.
    let bomb = vec![0u8; 1 << 20];
    let mut packed = vec![0u8; 8192];
    let n = peng3dnet_core::connection::Compressor::compress(&low, &bomb, &mut packed).unwrap();
    assert!(n + 10 <= BUF);
    s.handle_input(&frame(64, 1, &packed[..n]));
    assert_eq!(
        drain(&mut s, T0),
        [Rec::Closed(
            CloseReason::DecompressionFailed,
            Initiator::Local
        )]
    );
    let (_, ce) = exchange(&mut s, &mut c);
    assert_eq!(
        ce,
        [Rec::Closed(
            CloseReason::DecompressionFailed,
            Initiator::Peer
        )]
    );
}
