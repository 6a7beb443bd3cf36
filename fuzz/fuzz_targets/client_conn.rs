//! A client fed a valid `hello` first, then arbitrary bytes, in fragments,
//! with sends, closes and timers between them.
//!
//! Input: a `Script` (see `fuzz/README.md`). `opts[0]`: config bits
//! (`peng3dnet_fuzz::opt`; bit 0 = the hello is MessagePack, so the client's
//! `AnyCodec` switches to it); `opts[1]`: buffers as in `server_conn`;
//! `opts[2]`: bits 0-1 connection type (classic, ping, fuzz, classic), bit 2
//! a shared (read-only) registry, bit 3 a registry with other names, bit 6
//! no hello first (the bytes start at the connection's start), bit 7 the
//! transport ends right after the last fragment, before it is polled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::messages::{Hello, PingRequest, SetType};
use peng3dnet_core::time::Instant;
use peng3dnet_core::{Connection, SecurityLevel, State};
use peng3dnet_fuzz::{
    config, encode, frame, opt, other_registry, parse_stream, registry, Buf, Driver, Reg, Script,
    RX_SIZES, TX_SIZES,
};
use peng3dnet_std::buffer::HeapBuffer;
use peng3dnet_std::codec::{AnyCodec, MsgPack};

fuzz_target!(|input: &[u8]| {
    let script = Script::parse(input);
    let [o0, o1, o2] = script.opts;
    let cfg = config(o0);
    let shared_reg = registry();
    let mine = if o2 & 8 != 0 {
        other_registry()
    } else {
        registry()
    };
    let reg = if o2 & 4 != 0 {
        Reg::Shared(&shared_reg)
    } else {
        Reg::Owned(mine)
    };
    let conntype = ["classic", "ping", "fuzz", "classic"][(o2 & 3) as usize];
    let rx_size = RX_SIZES[(o1 & 3) as usize];
    let tx_size = TX_SIZES[((o1 >> 2) & 3) as usize];
    let (mut rx_store, mut tx_store) = (vec![0u8; rx_size], vec![0u8; tx_size]);
    let rx = if o1 & 0x10 != 0 {
        Buf::Heap(HeapBuffer::new(rx_size, 0))
    } else {
        Buf::Fixed(&mut rx_store)
    };
    let tx = if o1 & 0x80 != 0 {
        Buf::Heap(HeapBuffer::new(tx_size, 0))
    } else {
        Buf::Fixed(&mut tx_store)
    };
    let mut client = Connection::client(
        &cfg,
        reg,
        AnyCodec::Postcard,
        rx,
        tx,
        conntype,
        Instant::ZERO,
    )
    .unwrap();
    if o1 & 0x20 != 0 {
        client.set_security_level(SecurityLevel::Encrypted);
    }
    assert_eq!(client.state(), State::HelloWait);
    assert!(client.poll_transmit().is_empty());

    let mut driver = Driver::new(o1 & 0x40 != 0);
    if o2 & 0x40 != 0 {
        driver.run(&mut client, &script, o2 & 0x80 != 0);
        return;
    }
    // A valid hello, in the server's codec.
    let msgpack = o0 & opt::MSGPACK != 0;
    let hello = Hello {
        version: "0.1.3a0",
        protoversion: 2,
    };
    let body = if msgpack {
        encode(&MsgPack, &hello)
    } else {
        encode(&Postcard, &hello)
    };
    driver.feed(&mut client, &frame(1, 0, &body), false);
    driver.check(&client);
    let expected_codec = if msgpack {
        AnyCodec::MsgPack
    } else {
        AnyCodec::Postcard
    };
    assert_eq!(
        *client.codec(),
        expected_codec,
        "codec not taken from the hello"
    );
    assert!(!client.is_closed(), "a valid hello closed: {client:?}");
    // It answered with settype (and, on ping, the request).
    let (frames, end) = parse_stream(client.poll_transmit(), usize::MAX);
    assert_eq!(end, peng3dnet_fuzz::StreamEnd::Partial(0));
    assert_eq!(frames[0].packet_id, 2);
    let st: SetType = client.codec().decode(frames[0].body).unwrap();
    assert_eq!(st.conntype, conntype);
    assert_eq!(client.conntype(), conntype);
    if conntype == "ping" {
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].packet_id, 64);
        let _: PingRequest = client.codec().decode(frames[1].body).unwrap();
    } else {
        assert_eq!(frames.len(), 1);
    }

    driver.run(&mut client, &script, o2 & 0x80 != 0);
});
