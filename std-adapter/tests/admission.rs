//! Admission defences of the mio server, on 127.0.0.1: at most N clients
//! from one address (`--max-per-ip`, `toomanyconnections`) and at most N new
//! clients a second (`--max-accepts-per-sec`, `serverbusy`), plain and TLS.
//! Every wait is bounded.

mod common;

use common::{Proc, LIMIT};
use peng3dnet_core::codec::Postcard;
use peng3dnet_std::echo;
use peng3dnet_std::server::ServerOptions;
use peng3dnet_std::tls::TlsServerConfig;
use peng3dnet_test_pki::Pki;
use peng3dnet_test_support::{Arrival, Ending, RawPeer};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The reason of a `closeconn` that is the first frame `peer` gets, or
/// `None` if the first frame is another (`hello`: accepted).
fn refused_with(peer: &mut RawPeer<Postcard>) -> Option<String> {
    match peer.read_frame(Instant::now() + LIMIT) {
        Arrival::Frame(16, _, body) => Some(String::from_utf8_lossy(&body).into_owned()),
        Arrival::Frame(..) => None,
        other => panic!("no first frame: {other:?}"),
    }
}

#[test]
fn the_program_refuses_a_third_client_from_one_address() {
    let (_server, addr) = Proc::rust_server(&["--max-per-ip", "2"]);
    let mut a = RawPeer::connect(addr, Postcard, LIMIT);
    a.handshake();
    let mut b = RawPeer::connect(addr, Postcard, LIMIT);
    b.handshake();
    let mut c = RawPeer::connect(addr, Postcard, LIMIT);
    let reason = refused_with(&mut c).expect("the third is refused");
    assert!(reason.contains("toomanyconnections"), "{reason:?}");
    // One leaves: the next from that address gets in.
    a.send_closeconn("userrequest");
    assert_eq!(a.ending(), Ending::Ended);
    let mut admitted = false;
    for _ in 0..50 {
        let mut d = RawPeer::connect(addr, Postcard, LIMIT);
        if refused_with(&mut d).is_none() {
            admitted = true;
            break;
        }
        // The server may not have seen `a` go yet.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(admitted, "a slot of that address came free");
}

/// Connects `n` plain TCP sockets at once to `addr` and sorts them: those
/// that got a `closeconn` first (its body) and those that got anything else
/// or nothing within `wait` (accepted: a TLS server sends nothing first).
fn burst(addr: SocketAddr, n: usize, wait: Duration) -> (Vec<String>, usize) {
    let sockets: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (mut refused, mut other) = (Vec::new(), 0);
    for s in sockets {
        let mut peer = RawPeer::from_stream(s, Postcard, LIMIT);
        match peer.read_frame(Instant::now() + wait) {
            Arrival::Frame(16, _, body) => {
                refused.push(String::from_utf8_lossy(&body).into_owned())
            }
            _ => other += 1,
        }
    }
    (refused, other)
}

#[test]
fn the_program_bounds_new_clients_a_second() {
    let (_server, addr) = Proc::rust_server(&["--max-accepts-per-sec", "3"]);
    // 12 at once: the burst of 3 (and perhaps one or two refilled while
    // they connect) get `hello`, the rest `serverbusy`.
    let (refused, accepted) = burst(addr, 12, LIMIT);
    assert!((3..=6).contains(&accepted), "{accepted} accepted");
    assert_eq!(refused.len(), 12 - accepted);
    assert!(
        refused.iter().all(|r| r.contains("serverbusy")),
        "{refused:?}"
    );
}

#[test]
fn tls_handshakes_started_a_second_are_bounded_too() {
    let pki = Pki::generate(&["localhost", "127.0.0.1"]);
    let tls = TlsServerConfig::from_pem(
        pki.server.pem.as_bytes(),
        pki.server.key_pem.as_bytes(),
        None,
    )
    .unwrap();
    let options = ServerOptions {
        tls: Some(tls),
        max_accepts_per_second: Some(2),
        ..ServerOptions::default()
    };
    let running = echo::server(echo::registry(), options)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    // Refused before any TLS is set up: a plain `closeconn`; the accepted
    // wait for a ClientHello and send nothing.
    let (refused, accepted) = burst(running.local_addr(), 10, Duration::from_millis(300));
    assert!((2..=4).contains(&accepted), "{accepted} accepted");
    assert!(refused.len() >= 6, "{refused:?}");
    assert!(
        refused.iter().all(|r| r.contains("serverbusy")),
        "{refused:?}"
    );
}
