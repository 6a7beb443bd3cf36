//! Property tests: encode/decode round trips of frames (fed in random
//! fragments) and of every internal message.

use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::messages::{
    CloseConn, HandshakeAccept, HandshakeOut, HandshakeSeed, Hello, PeerInfo, PingRequest,
    PingResponse, SetType,
};
use peng3dnet_core::registry::Registry;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::wire::{encode_frame, Flags, FrameDecoder, FrameError};
use peng3dnet_core::CloseReason;
use proptest::prelude::*;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

fn round_trip<'a, T>(value: &T, buf: &'a mut [u8]) -> T
where
    T: Serialize + Deserialize<'a> + Debug,
{
    let n = Postcard.encode(value, buf).unwrap();
    assert_eq!(Postcard.encoded_len(value).unwrap(), n);
    Postcard.decode(&buf[..n]).unwrap()
}

/// The ping answer read back as a map, in order.
#[derive(Debug, PartialEq)]
struct PingAnswer {
    oldmsg: PingRequest,
    version: String,
    release: String,
    data: Vec<(String, String)>,
}

impl<'de> Deserialize<'de> for PingAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PingAnswer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a ping answer")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PingAnswer, A::Error> {
                let _: &str = map.next_key()?.unwrap();
                let oldmsg: PingRequest = map.next_value()?;
                let _: &str = map.next_key()?.unwrap();
                let info: PeerInfo = map.next_value()?;
                let mut data = Vec::new();
                while let Some((k, v)) = map.next_entry::<&str, &str>()? {
                    data.push((k.to_string(), v.to_string()));
                }
                Ok(PingAnswer {
                    oldmsg,
                    version: info.version.into(),
                    release: info.release.into(),
                    data,
                })
            }
        }
        d.deserialize_map(V)
    }
}

proptest! {
    #[test]
    fn frames_survive_any_fragmentation(
        frames in prop::collection::vec((any::<u32>(), prop::bool::ANY, prop::collection::vec(any::<u8>(), 0..300)), 1..20),
        cuts in prop::collection::vec(1usize..64, 1..200),
    ) {
        let mut stream = Vec::new();
        for (pid, compressed, body) in &frames {
            let flags = if *compressed { Flags::COMPRESSED } else { Flags::EMPTY };
            let mut out = vec![0u8; body.len() + 10];
            let n = encode_frame(&mut out, *pid, flags, body).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        let mut dec = FrameDecoder::new([0u8; 512]);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() {
            let end = (pos + cut.next().unwrap()).min(stream.len());
            while pos < end {
                let n = dec.feed(&stream[pos..end]);
                pos += n;
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push((f.packet_id, f.flags == Flags::COMPRESSED, f.body.to_vec()));
                }
                prop_assert!(n > 0 || dec.buffered() > 0);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn the_decoder_never_panics_and_stays_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(1usize..100, 1..50),
    ) {
        let mut dec = FrameDecoder::new([0u8; 128]);
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        'outer: while pos < bytes.len() {
            let end = (pos + cut.next().unwrap()).min(bytes.len());
            let n = dec.feed(&bytes[pos..end]);
            pos += n;
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => prop_assert!(f.body.len() <= 128 - 10),
                    Ok(None) => break,
                    Err(e) => {
                        let sticky: Option<FrameError> = dec.error();
                        prop_assert_eq!(sticky, Some(e));
                        prop_assert!(dec.free_space().is_empty());
                        break 'outer;
                    }
                }
            }
            prop_assert!(dec.buffered() <= 128);
            if n == 0 { break; }
        }
    }

    #[test]
    fn hello_settype_accept_close_round_trip(
        version in "\\PC{0,40}",
        protoversion in any::<u32>(),
        conntype in "\\PC{0,40}",
        success in any::<bool>(),
        reason in prop::option::of("\\PC{0,60}"),
        time in -1e12f64..1e12,
    ) {
        let mut buf = [0u8; 512];
        let hello = Hello { version: &version, protoversion };
        prop_assert_eq!(round_trip(&hello, &mut buf), hello);
        let mut buf = [0u8; 512];
        let st = SetType { conntype: &conntype };
        prop_assert_eq!(round_trip(&st, &mut buf), st);
        let mut buf = [0u8; 16];
        let acc = HandshakeAccept { success };
        prop_assert_eq!(round_trip(&acc, &mut buf), acc);
        let mut buf = [0u8; 512];
        let cc = CloseConn { reason: reason.as_deref() };
        prop_assert_eq!(round_trip(&cc, &mut buf), cc);
        let mut buf = [0u8; 16];
        let req = PingRequest { time };
        prop_assert_eq!(round_trip(&req, &mut buf), req);
        let mut buf = [0u8; 512];
        let info = PeerInfo { version: &version, release: &conntype, protoversion };
        prop_assert_eq!(round_trip(&info, &mut buf), info);
    }

    #[test]
    fn ping_answers_round_trip(
        time in -1e12f64..1e12,
        data in prop::collection::vec(("[a-z]{1,10}", "\\PC{0,20}"), 0..5),
    ) {
        let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = PingResponse {
            oldmsg: PingRequest { time },
            peng3dnet: PeerInfo { version: "v", release: "r", protoversion: 2 },
            data: &pairs,
        };
        let mut buf = [0u8; 1024];
        let n = Postcard.encode(&answer, &mut buf).unwrap();
        let back: PingAnswer = Postcard.decode(&buf[..n]).unwrap();
        prop_assert_eq!(back, PingAnswer {
            oldmsg: PingRequest { time },
            version: "v".into(),
            release: "r".into(),
            data: data.clone(),
        });
    }

    #[test]
    fn handshakes_round_trip_and_sync(
        names in prop::collection::btree_set("[a-z]{1,8}:[a-z.]{1,12}", 0..20),
        protoversion in any::<u32>(),
    ) {
        let names: Vec<&'static str> = names.into_iter().map(|n| &*Box::leak(n.into_boxed_str())).collect();
        let mut server = Registry::<32>::new();
        for n in &names {
            server.register_raw(n, None, Rules::NONE).unwrap();
        }
        let mut client = Registry::<32>::new();
        for n in names.iter().rev() {
            client.register_raw(n, None, Rules::NONE).unwrap();
        }
        let out = HandshakeOut { version: "v", protoversion, registry: server.as_map() };
        let mut buf = [0u8; 2048];
        let n = Postcard.encode(&out, &mut buf).unwrap();
        let hs = Postcard.decode_seed(HandshakeSeed(&client), &buf[..n]).unwrap();
        prop_assert_eq!(hs.protoversion, protoversion);
        prop_assert!(hs.sync.same_names());
        client.apply_sync(&hs.sync, Default::default()).unwrap();
        for e in server.entries() {
            prop_assert_eq!(client.by_name(e.name).unwrap().id, e.id);
            prop_assert_eq!(client.by_id(e.id).unwrap().name, e.name);
        }
    }

    #[test]
    fn close_reasons_round_trip(text in "\\PC{0,48}") {
        let r = CloseReason::from_wire(Some(&text));
        if text.len() <= 48 {
            prop_assert_eq!(r.as_wire(), Some(text.as_str()));
        }
    }
}
