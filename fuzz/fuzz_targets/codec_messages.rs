//! Every internal message decoded from arbitrary bytes with Postcard and
//! with the std adapter's MessagePack (the codec of the Python reference):
//! no panic, and a value that decodes re-encodes (`encoded_len` agreeing
//! with `encode`, a buffer one byte short refused with `BufferTooSmall`)
//! and decodes to the same value, whose encoding is then stable. The
//! handshake decodes through `HandshakeSeed` against a registry, and a
//! report that decodes is applied to a copy of the registry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peng3dnet_core::codec::{Codec, CodecError, Postcard};
use peng3dnet_core::messages::{
    CloseConn, HandshakeAccept, HandshakeSeed, Hello, PeerInfo, PingRequest, SetType,
};
use peng3dnet_core::registry::{Registry, SyncPolicy, RESERVED_PREFIX};
use peng3dnet_core::types::MAX_REASON_LEN;
use peng3dnet_core::CloseReason;
use peng3dnet_fuzz::{registry, REG_N};
use peng3dnet_std::codec::{AnyCodec, MsgPack};

/// Decodes `$ty` from `$data`; if it decodes, re-encodes and compares.
macro_rules! roundtrip {
    ($codec:expr, $data:expr, $ty:ty, $eq:expr) => {{
        let codec = $codec;
        if let Ok(v) = codec.decode::<$ty>($data) {
            let len = codec
                .encoded_len(&v)
                .unwrap_or_else(|e| panic!("{}: decoded {v:?} has no length: {e:?}", codec.name()));
            let mut buf = vec![0u8; len + 8];
            let n = codec.encode(&v, &mut buf).unwrap_or_else(|e| {
                panic!("{}: decoded {v:?} does not encode: {e:?}", codec.name())
            });
            assert_eq!(n, len, "{}: encoded_len of {v:?}", codec.name());
            if len > 0 {
                let mut short = vec![0u8; len - 1];
                assert_eq!(
                    codec.encode(&v, &mut short),
                    Err(CodecError::BufferTooSmall),
                    "{}: {v:?} into {} bytes",
                    codec.name(),
                    len - 1
                );
            }
            let back: $ty = codec.decode(&buf[..n]).unwrap_or_else(|e| {
                panic!("{}: re-encoded {v:?} does not decode: {e:?}", codec.name())
            });
            let eq: fn(&$ty, &$ty) -> bool = $eq;
            assert!(
                eq(&v, &back),
                "{}: {v:?} came back as {back:?}",
                codec.name()
            );
            let mut again = vec![0u8; len];
            let m = codec.encode(&back, &mut again).unwrap();
            assert_eq!(
                &again[..m],
                &buf[..n],
                "{}: encoding of {v:?} not stable",
                codec.name()
            );
            Some(v)
        } else {
            None
        }
    }};
}

fn check_codec<C: Codec>(codec: &C, data: &[u8], reg: &Registry<REG_N>) {
    roundtrip!(codec, data, Hello, |a, b| a == b);
    roundtrip!(codec, data, SetType, |a, b| a == b);
    roundtrip!(codec, data, HandshakeAccept, |a, b| a == b);
    roundtrip!(codec, data, PeerInfo, |a, b| a == b);
    roundtrip!(codec, data, PingRequest, |a, b| a.time.to_bits()
        == b.time.to_bits());
    if let Some(cc) = roundtrip!(codec, data, CloseConn, |a, b| a == b) {
        let reason = CloseReason::from_wire(cc.reason);
        if let Some(w) = reason.as_wire() {
            assert!(w.len() <= MAX_REASON_LEN);
            assert_eq!(CloseReason::from_wire(Some(w)), reason);
        }
    }
    // The handshake, compared with a registry while it decodes.
    if let Ok(hs) = codec.decode_seed(HandshakeSeed(reg), data) {
        let s = &hs.sync;
        assert_eq!(s.ours, reg.len());
        let named = s.remote_ids.iter().filter(|i| i.is_some()).count();
        assert_eq!(named, s.matched);
        assert!(s.matched <= s.ours);
        assert!(s.remote_ids[s.ours..].iter().all(|i| i.is_none()));
        for policy in [SyncPolicy::CloseConnection, SyncPolicy::Ignore] {
            let mut copy = reg.clone();
            match copy.apply_sync(s, policy) {
                Ok(()) => {
                    assert!(!s.duplicate_names);
                    if policy == SyncPolicy::CloseConnection {
                        assert!(s.same_names());
                    }
                    for (i, (e, before)) in copy.entries().iter().zip(reg.entries()).enumerate() {
                        assert_eq!(e.name, before.name);
                        assert_eq!(e.id, s.remote_ids[i].unwrap_or(before.id));
                        if e.name.starts_with(RESERVED_PREFIX) {
                            assert_eq!(e.id, before.id, "an internal id moved");
                        }
                        assert_eq!(copy.by_id(e.id).map(|x| x.name), Some(e.name));
                        assert_eq!(copy.by_name(e.name).map(|x| x.id), Some(e.id));
                    }
                }
                Err(_) => assert_eq!(
                    copy.entries(),
                    reg.entries(),
                    "a failed sync changed the registry"
                ),
            }
        }
    }
    // The registry map alone.
    let _ = codec.decode_seed(reg.sync_seed(), data);
}

fuzz_target!(|data: &[u8]| {
    let reg = registry();
    check_codec(&Postcard, data, &reg);
    check_codec(&MsgPack, data, &reg);
    let mut any = AnyCodec::Postcard;
    any.detect_from_hello(data);
    let expected = match data.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => AnyCodec::MsgPack,
        _ => AnyCodec::Postcard,
    };
    assert_eq!(any, expected);
    let _ = any.decode::<Hello>(data);
});
