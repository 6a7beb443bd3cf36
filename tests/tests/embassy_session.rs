//! The embassy `Session` over an in-memory link (two `embassy-sync` pipes):
//! cancel-safety of `send` and `receive`, a sender task and a receiver task
//! working at the same time, and a deadline per request that other packets
//! do not restart. Every wait is bounded.

use embassy_futures::block_on;
use embassy_futures::join::{join, join3};
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::pipe::Pipe;
use embassy_sync::signal::Signal;
use embassy_time::{with_deadline, with_timeout, Duration, Instant, Timer};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, Config};
use peng3dnet_embassy::{Resources, Session};

struct Num;
impl Packet for Num {
    const NAME: &'static str = "test:num";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = (u32, &'a [u8]);
}

fn registry() -> Registry<8> {
    let mut r = Registry::new();
    r.register::<Num>().unwrap();
    r
}

const STEP: Duration = Duration::from_secs(5);

#[test]
fn a_dropped_receive_consumes_nothing_and_a_dropped_send_queues_nothing() {
    block_on(async {
        let (up, down) = (
            Pipe::<NoopRawMutex, 256>::new(),
            Pipe::<NoopRawMutex, 256>::new(),
        );
        let config = Config::new();
        let sreg = registry();
        let mut creg = registry();
        let mut sres = Resources::<1024, 1024>::new();
        let mut cres = Resources::<1024, 512>::new();
        let server: Session<NoopRawMutex, _, 8, _> =
            Session::server(&config, &sreg, Postcard, &mut sres).unwrap();
        let client: Session<NoopRawMutex, _, 8, _> =
            Session::client(&config, &mut creg, Postcard, &mut cres, "classic").unwrap();
        // The server's I/O is stopped for a while below (by dropping its
        // `run` future and starting a new one), so the client's transmit
        // buffer fills.
        let pause = Signal::<NoopRawMutex, ()>::new();
        let resume = Signal::<NoopRawMutex, ()>::new();
        let server_io = async {
            loop {
                match select(server.run(&up, &down), pause.wait()).await {
                    Either::First(r) => return r,
                    Either::Second(()) => resume.wait().await,
                }
            }
        };
        let test = async {
            with_timeout(STEP, client.wait_connected())
                .await
                .unwrap()
                .unwrap();
            // 1. A receive dropped before anything arrived...
            let mut buf = [0u8; 64];
            match select(
                client.receive(&mut buf),
                Timer::after(Duration::from_millis(20)),
            )
            .await
            {
                Either::First(r) => panic!("nothing was sent yet: {r:?}"),
                Either::Second(()) => {}
            }
            // ...then one that is dropped right after the packet arrived but
            // before it was polled again: the packet stays.
            server.send::<Num>(&(1, b"one")).await.unwrap();
            Timer::after(Duration::from_millis(20)).await;
            {
                let fut = client.receive(&mut buf);
                drop(fut);
            }
            let got = with_timeout(STEP, client.receive(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.decode::<Num>().unwrap(), (1, &b"one"[..]));

            // 2. A send that waits for room and is dropped queues nothing.
            // The client's transmit buffer is 512 bytes (96 kept for a
            // closeconn): fill it while the server does not read its pipe.
            pause.signal(());
            Timer::after(Duration::from_millis(20)).await;
            let body = [7u8; 100];
            let mut sent = 0u32;
            loop {
                match select(
                    client.send::<Num>(&(sent, &body)),
                    Timer::after(Duration::from_millis(20)),
                )
                .await
                {
                    Either::First(Ok(())) => sent += 1,
                    Either::First(Err(e)) => panic!("{e:?}"),
                    Either::Second(()) => break, // dropped while waiting for room
                }
                assert!(sent < 100, "the buffer never filled");
            }
            assert!(sent >= 2);
            resume.signal(());
            // Every packet that was accepted arrives, in order; the dropped
            // one does not.
            let mut sbuf = [0u8; 256];
            for i in 0..sent {
                let p = with_timeout(STEP, server.receive(&mut sbuf))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(p.decode::<Num>().unwrap().0, i);
            }
            client.send::<Num>(&(999, b"after")).await.unwrap();
            let p = with_timeout(STEP, server.receive(&mut sbuf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                p.decode::<Num>().unwrap().0,
                999,
                "the dropped send was never queued"
            );
            client.close(CloseReason::UserRequest);
        };
        let (_, s, c) = join3(test, server_io, client.run(&down, &up)).await;
        assert_eq!(s.unwrap().reason, CloseReason::UserRequest);
        assert_eq!(c.unwrap().reason, CloseReason::UserRequest);
    });
}

#[test]
fn a_sender_task_and_a_receiver_task_at_once() {
    block_on(async {
        let (up, down) = (
            Pipe::<NoopRawMutex, 128>::new(),
            Pipe::<NoopRawMutex, 128>::new(),
        );
        let config = Config::new();
        let sreg = registry();
        let mut creg = registry();
        let mut sres = Resources::<512, 512>::new();
        let mut cres = Resources::<512, 512>::new();
        let server: Session<NoopRawMutex, _, 8, _> =
            Session::server(&config, &sreg, Postcard, &mut sres).unwrap();
        let client: Session<NoopRawMutex, _, 8, _> =
            Session::client(&config, &mut creg, Postcard, &mut cres, "classic").unwrap();
        const COUNT: u32 = 500;
        let echo = async {
            let mut buf = [0u8; 128];
            for _ in 0..COUNT {
                let p = with_timeout(STEP, server.receive(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                let (n, body) = p.decode::<Num>().unwrap();
                let mut copy = [0u8; 64];
                copy[..body.len()].copy_from_slice(body);
                server.send::<Num>(&(n, &copy[..body.len()])).await.unwrap();
            }
        };
        let sender = async {
            with_timeout(STEP, client.wait_connected())
                .await
                .unwrap()
                .unwrap();
            for i in 0..COUNT {
                with_timeout(STEP, client.send::<Num>(&(i, b"ping")))
                    .await
                    .unwrap()
                    .unwrap();
            }
        };
        let receiver = async {
            let mut buf = [0u8; 128];
            for i in 0..COUNT {
                let p = with_timeout(STEP, client.receive(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(p.decode::<Num>().unwrap(), (i, &b"ping"[..]));
            }
            client.close(CloseReason::UserRequest);
        };
        let app = join3(echo, sender, receiver);
        let (_, (s, c)) = join(app, join(server.run(&up, &down), client.run(&down, &up))).await;
        assert_eq!(s.unwrap().reason, CloseReason::UserRequest);
        assert_eq!(c.unwrap().reason, CloseReason::UserRequest);
    });
}

#[test]
fn one_deadline_bounds_a_request_while_other_packets_keep_coming() {
    block_on(async {
        let (up, down) = (
            Pipe::<NoopRawMutex, 256>::new(),
            Pipe::<NoopRawMutex, 256>::new(),
        );
        let config = Config::new();
        let sreg = registry();
        let mut creg = registry();
        let mut sres = Resources::<512, 512>::new();
        let mut cres = Resources::<512, 512>::new();
        let server: Session<NoopRawMutex, _, 8, _> =
            Session::server(&config, &sreg, Postcard, &mut sres).unwrap();
        let client: Session<NoopRawMutex, _, 8, _> =
            Session::client(&config, &mut creg, Postcard, &mut cres, "classic").unwrap();
        const WAIT: Duration = Duration::from_millis(300);
        // The server never answers the request (number 7): it sends another
        // packet every 20 ms, far more often than the deadline.
        let chatter = async {
            with_timeout(STEP, server.wait_connected())
                .await
                .unwrap()
                .unwrap();
            for i in 0..100u32 {
                let _ = server.send::<Num>(&(i + 100, b"noise")).await;
                Timer::after_millis(20).await;
            }
        };
        let request = async {
            with_timeout(STEP, client.wait_connected())
                .await
                .unwrap()
                .unwrap();
            client.send::<Num>(&(7, b"request")).await.unwrap();
            let start = Instant::now();
            let deadline = start + WAIT;
            let mut buf = [0u8; 128];
            let mut others = 0;
            let answer = loop {
                match with_deadline(deadline, client.receive(&mut buf)).await {
                    Ok(Ok(p)) if p.decode::<Num>().unwrap().0 == 7 => break Some(()),
                    Ok(Ok(_)) => others += 1,
                    Ok(Err(e)) => panic!("{e:?}"),
                    Err(_) => break None,
                }
            };
            let took = Instant::now() - start;
            assert_eq!(answer, None, "the server never answers");
            assert!(others >= 5, "packets kept coming: {others}");
            assert!(
                took >= WAIT && took < WAIT * 3,
                "the wait ended after {took:?}, not at the deadline"
            );
            client.close(CloseReason::UserRequest);
        };
        // The server takes what the client sends (and never answers), so
        // that the client's closeconn behind the request is read.
        let drain = async {
            let mut buf = [0u8; 128];
            while server.receive(&mut buf).await.is_ok() {}
        };
        let all = join(
            join3(chatter, request, drain),
            join(server.run(&up, &down), client.run(&down, &up)),
        );
        match select(all, Timer::after(STEP * 4)).await {
            Either::First((_, (s, c))) => {
                assert_eq!(s.unwrap().reason, CloseReason::UserRequest);
                assert_eq!(c.unwrap().reason, CloseReason::UserRequest);
            }
            Either::Second(()) => panic!("the test ran out of time"),
        }
    });
}
