//! The server's view of one client, fed arbitrary bytes from the start of
//! the connection, in fragments, with sends, closes and timers between them.
//!
//! Input: a `Script` (see `peng3dnet_fuzz::Script` and `fuzz/README.md`).
//! `opts[0]`: config bits (`peng3dnet_fuzz::opt`; bit 0 = MessagePack);
//! `opts[1]`: bits 0-1 receive size, 2-3 transmit size, bit 4 growable
//! receive buffer, bit 5 encrypted transport, bit 6 zero-copy reads, bit 7
//! growable transmit buffer; `opts[2]` bit 6: events through `poll_with`,
//! every other packet kept and handed out again; bit 7: the transport ends
//! right after the last fragment arrived, before it is polled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::connection::server_tx_required;
use peng3dnet_core::messages::{Hello, PROTOVERSION};
use peng3dnet_core::time::Instant;
use peng3dnet_core::{Connection, SecurityLevel, State};
use peng3dnet_fuzz::{
    config, opt, parse_stream, registry, Buf, Driver, Script, RX_SIZES, TX_SIZES,
};
use peng3dnet_std::buffer::HeapBuffer;
use peng3dnet_std::codec::AnyCodec;

fuzz_target!(|input: &[u8]| {
    let script = Script::parse(input);
    let [o0, o1, o2] = script.opts;
    let cfg = config(o0);
    let reg = registry();
    let codec = if o0 & opt::MSGPACK != 0 {
        AnyCodec::MsgPack
    } else {
        AnyCodec::Postcard
    };
    let rx_size = RX_SIZES[(o1 & 3) as usize];
    // A server's transmit buffer must hold its handshake (the whole
    // registry), else `Connection::server` refuses it: the smaller sizes
    // are raised to the least one accepted, the tightest case.
    let least = server_tx_required(&cfg, &reg, &codec).expect("the handshake encodes");
    let tx_size = TX_SIZES[((o1 >> 2) & 3) as usize].max(least);
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
    let mut server = Connection::server(&cfg, &reg, codec, rx, tx, Instant::ZERO).unwrap();
    if o1 & 0x20 != 0 {
        server.set_security_level(SecurityLevel::Encrypted);
    }
    // The hello is queued, whole, and nothing else.
    assert_eq!(server.state(), State::WaitType);
    let (frames, _) = parse_stream(server.poll_transmit(), usize::MAX);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].packet_id, 1);
    let hello: Hello = codec.decode(frames[0].body).unwrap();
    assert_eq!(
        (hello.version, hello.protoversion),
        (cfg.version, PROTOVERSION)
    );

    let mut driver = Driver::new(o1 & 0x40 != 0);
    driver.in_place = o2 & 0x40 != 0;
    driver.run(&mut server, &script, o2 & 0x80 != 0);
});
