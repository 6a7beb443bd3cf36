//! The `peng3dnet` program over a serial link: `serve --serial` on a
//! pseudo-terminal (a real tty device path, through `serialport`), and
//! `echo --serial` / `ping --serial` over `tcp:127.0.0.1:PORT` (how they
//! reach an emulator's serial socket), each against
//! `stream::StreamConnection` in this process.
#![cfg(all(unix, feature = "cli"))]

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{ClientError, ClientEvent};
use peng3dnet_std::echo::{self, Echo, EchoPing, PingAnswer};
use peng3dnet_std::ping::ping_stream;
use peng3dnet_std::stream::{StreamConnection, StreamOptions};
use serialport::SerialPort;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn program() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
}

/// Waits (at most 10 s, in 100 steps) for `child` to exit; kills it
/// otherwise. Its output, and whether it exited by itself.
fn finish(mut child: Child) -> (Output, bool) {
    let mut exited = false;
    for _ in 0..100 {
        if child.try_wait().expect("try_wait").is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !exited {
        let _ = child.kill();
    }
    (child.wait_with_output().expect("output"), exited)
}

#[test]
fn serve_over_a_pty_echoes_then_answers_a_ping_on_the_next_connection() {
    let (master, slave) = serialport::TTYPort::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the tty's path");
    // The program opens the tty by its path, and takes it exclusively.
    drop(slave);
    // A child must not inherit the master (the line would never hang up):
    // keep a close-on-exec copy only.
    let cloexec = master.try_clone_native().expect("close-on-exec master");
    drop(master);
    let mut child = program()
        .args(["serve", "--serial", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peng3dnet serve --serial");
    // Its first line says the line is open (or it gave up after its
    // --open-timeout and the line is empty).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).expect("serve's first line");
    assert!(first.contains("serving over the serial link"), "{first:?}");

    let port: Box<dyn SerialPort> = Box::new(cloexec);
    let mut client =
        StreamConnection::client(port, echo::registry(), Postcard, StreamOptions::default())
            .expect("client");
    client.wait_connected(T).expect("handshake over the pty");
    client.send::<Echo>(&"over a pty").expect("send");
    let answer = loop {
        match client.recv(T).expect("the echo") {
            ClientEvent::Packet(p) => break p.decode::<Echo>().expect("decode").to_owned(),
            ClientEvent::Closed(c) => panic!("closed before the echo: {c}"),
            _ => {}
        }
    };
    assert_eq!(answer, "over a pty");
    client.close(CloseReason::UserRequest).expect("close");
    // The next connection on the same line: a ping.
    let (reply, port) = ping_stream(client.into_stream(), Postcard, T).expect("ping");
    assert_eq!(reply.release, env!("CARGO_PKG_VERSION"));
    // Both connections ended on the program's side too (each close is a
    // line; a connection that went wrong would end with its handshake
    // timer and print its line all the same).
    let mut lines = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut lines).expect("serve's output");
    }
    // Hang up: the program's serve ends with the line (a hangup may drop
    // bytes still unread in the pty, so only now).
    drop(port);
    let (out, exited) = finish(child);
    stdout.read_to_string(&mut lines).expect("serve's output");
    let stdout = lines;
    assert!(exited, "serve did not end with the line: {stdout}");
    assert!(
        out.status.success(),
        "serve failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("serial connection 1 closed (userrequest, by Peer)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("serial connection 2 closed (pingcomplete, by "),
        "{stdout}"
    );
    assert!(stdout.contains("the serial link ended"), "{stdout}");
}

/// The echo service over one accepted socket, one connection after
/// another until the socket ends; returns the closes' reasons.
fn serial_echo_server(listener: TcpListener) -> std::thread::JoinHandle<Vec<CloseReason>> {
    std::thread::spawn(move || {
        let (mut link, _) = listener.accept().expect("accept");
        let mut reasons = Vec::new();
        for _ in 0..10 {
            let mut conn = StreamConnection::server(
                link,
                echo::registry(),
                Postcard,
                StreamOptions::default(),
            )
            .expect("server");
            for _ in 0..1000 {
                match conn.recv(T) {
                    Ok(ClientEvent::Packet(p)) if p.is::<Echo>() => {
                        let _ = conn.send_encoded(p.packet_id, &p.body);
                    }
                    Ok(ClientEvent::Packet(p)) if p.is::<EchoPing>() => {
                        if let Some(PingAnswer::Msg(m)) = echo::stamp_ping(&Postcard, &p.body) {
                            let _ = conn.send::<EchoPing>(&m);
                        }
                    }
                    Ok(ClientEvent::Closed(c)) | Err(ClientError::Closed(c)) => {
                        reasons.push(c.reason);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("serial echo server: {e}"),
                }
            }
            if conn.stream_ended() {
                break;
            }
            link = conn.into_stream();
        }
        reasons
    })
}

#[test]
fn echo_and_ping_over_a_tcp_serial_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", listener.local_addr().unwrap());
    let server = serial_echo_server(listener);
    let out = program()
        .args(["echo", "--serial", &target, "hello", "serial line"])
        .output()
        .expect("peng3dnet echo --serial");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nserial line\n");
    let reasons = server.join().unwrap();
    // The program closed, then hung up (its socket ended the next one).
    assert_eq!(reasons[0], CloseReason::UserRequest, "{reasons:?}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", listener.local_addr().unwrap());
    let server = serial_echo_server(listener);
    let mut child = program()
        .args(["ping", "--serial", &target, "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("peng3dnet ping --serial");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let (out, exited) = finish(child);
    assert!(exited && out.status.success(), "ping failed: {stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(json["peng3dnet"]["release"], env!("CARGO_PKG_VERSION"));
    assert!(json["delay"].as_f64().is_some_and(|d| d >= 0.0), "{json}");
    let reasons = server.join().unwrap();
    assert_eq!(reasons[0], CloseReason::PingComplete, "{reasons:?}");
}
