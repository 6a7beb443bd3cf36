//! A byte stream that corrupts or drops bytes (a noisy serial line) between
//! `stream::StreamConnection`s: a relay between a client and the echo
//! server, over two `UnixStream` pairs, rewrites the first `echo:echo`
//! frame the server sends back (or the client's request). Each case must
//! end in a named close, within a bounded time, never a hang
//! (docs/PROTOCOL.md, "Framing over a byte stream that can lose or change
//! bytes").

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::{CloseReason, Closed, Initiator};
use peng3dnet_std::client::{ClientError, ClientEvent};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::stream::{StreamConnection, StreamOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the relay does to the frame: gets its bytes (length prefix
/// included), returns what goes on.
type Mangle = fn(Vec<u8>) -> Vec<u8>;

/// Bound of every wait of a case.
const T: Duration = Duration::from_secs(10);

/// The echo server over `stream`, until its connection closes.
fn echo_server(stream: UnixStream) -> JoinHandle<Option<Closed>> {
    std::thread::spawn(move || {
        let mut conn =
            StreamConnection::server(stream, echo::registry(), Postcard, StreamOptions::default())
                .ok()?;
        for _ in 0..1000 {
            match conn.recv(T) {
                Ok(ClientEvent::Packet(p)) if p.is::<Echo>() => {
                    let _ = conn.send_encoded(p.packet_id, &p.body);
                }
                Ok(ClientEvent::Closed(c)) | Err(ClientError::Closed(c)) => return Some(c),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
}

/// Copies `from` to `to` frame by frame, handing the first frame with
/// packet id `target` to `mangle`; ends at end of stream, or after the
/// mangled frame with `cut`.
fn relay(mut from: UnixStream, mut to: UnixStream, target: Option<u32>, mangle: Mangle, cut: bool) {
    std::thread::spawn(move || {
        let mut done = false;
        loop {
            let mut prefix = [0u8; 4];
            if from.read_exact(&mut prefix).is_err() {
                break;
            }
            let len = u32::from_be_bytes(prefix) as usize;
            let mut frame = prefix.to_vec();
            frame.resize(4 + len, 0);
            if from.read_exact(&mut frame[4..]).is_err() {
                break;
            }
            let pid = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let hit = !done && Some(pid) == target;
            if hit {
                done = true;
                frame = mangle(frame);
            }
            if to.write_all(&frame).is_err() || (hit && cut) {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Client and echo server with the relay between them; the first echo
/// answer goes through `mangle`. Returns how the client's connection
/// ended and what it received before.
fn run_case(mangle: Mangle) -> (Closed, Vec<String>) {
    let (closed, got, _) = run_case_with(mangle, false, false);
    (closed, got)
}

/// [`run_case`] with a client whose frame timer is short (the default is
/// 30 s): a frame that never completes ends sooner.
fn run_case_frame_timer(mangle: Mangle) -> (Closed, Vec<String>) {
    let options = StreamOptions {
        frame_timeout: Duration::from_millis(300),
        ..StreamOptions::default()
    };
    let (closed, got, _) = run_case_opts(mangle, false, false, options);
    (closed, got)
}

/// [`run_case`]; with `cut`, the line to the client ends after the
/// mangled frame.
fn run_case_cut(mangle: Mangle, cut: bool) -> (Closed, Vec<String>) {
    let (closed, got, _) = run_case_with(mangle, cut, false);
    (closed, got)
}

/// [`run_case_cut`]; with `to_server`, the client's echo request is
/// mangled on its way to the server instead. Returns the server's close
/// as well.
fn run_case_with(mangle: Mangle, cut: bool, to_server: bool) -> (Closed, Vec<String>, Closed) {
    run_case_opts(mangle, cut, to_server, StreamOptions::default())
}

/// [`run_case_with`], the client's connection with `options`.
fn run_case_opts(
    mangle: Mangle,
    cut: bool,
    to_server: bool,
    options: StreamOptions,
) -> (Closed, Vec<String>, Closed) {
    let (client_end, relay_c) = UnixStream::pair().unwrap();
    let (relay_s, server_end) = UnixStream::pair().unwrap();
    let server = echo_server(server_end);
    let echo_id = echo::registry().id_of::<Echo>();
    let (up, down): (Mangle, Mangle) = if to_server {
        (mangle, |f| f)
    } else {
        (|f| f, mangle)
    };
    relay(
        relay_c.try_clone().unwrap(),
        relay_s.try_clone().unwrap(),
        echo_id,
        up,
        cut && to_server,
    );
    relay(relay_s, relay_c, echo_id, down, cut && !to_server);

    let mut client =
        StreamConnection::client(client_end, echo::registry(), Postcard, options).unwrap();
    client
        .wait_connected(T)
        .expect("handshake through the relay");
    client.send::<Echo>(&"through a noisy line").unwrap();
    let mut got = Vec::new();
    let closed = loop {
        match client.recv(T) {
            Ok(ClientEvent::Packet(p)) => {
                got.push(
                    p.decode::<Echo>()
                        .map_or_else(|e| format!("<{e}>"), str::to_owned),
                );
                // An answer came through: end it here (as an application
                // would once it has what it asked for).
                client.close(CloseReason::UserRequest).unwrap();
            }
            Ok(ClientEvent::Closed(c)) => break c,
            Ok(_) => {}
            Err(ClientError::Closed(c)) => break c,
            Err(e) => panic!("the client did not end in a named close: {e}"),
        }
    };
    drop(client);
    let server_closed = server.join().unwrap();
    let server_closed = server_closed.expect("the server's connection ended too");
    (closed, got, server_closed)
}

fn assert_local_close(closed: &Closed, reason: CloseReason) {
    assert_eq!(closed.reason, reason, "{closed}");
    assert_eq!(closed.initiator, Initiator::Local, "{closed}");
}

#[test]
fn untouched_line_echoes_and_closes_by_request() {
    let (closed, got) = run_case(|f| f);
    assert_eq!(got, ["through a noisy line"]);
    assert_local_close(&closed, CloseReason::UserRequest);
}

#[test]
fn length_prefix_too_large_closes_packettoolarge() {
    // The top byte of the prefix flipped: 2^24 and more announced.
    let (closed, got) = run_case(|mut f| {
        f[0] ^= 0xff;
        f
    });
    assert!(got.is_empty(), "nothing was delivered: {got:?}");
    assert_local_close(&closed, CloseReason::FrameTooLarge);
    assert_eq!(closed.reason.to_string(), "packettoolarge");
}

#[test]
fn length_prefix_below_the_header_closes_malformedframe() {
    let (closed, got) = run_case(|mut f| {
        f[..4].copy_from_slice(&3u32.to_be_bytes());
        f
    });
    assert!(got.is_empty(), "nothing was delivered: {got:?}");
    assert_local_close(&closed, CloseReason::MalformedFrame);
}

#[test]
fn flipped_flag_bits_close_unknownflags_or_encryptionunsupported() {
    // Flags are bytes 8 and 9 of the frame (after prefix and id).
    let (closed, _) = run_case(|mut f| {
        f[8] ^= 0x80;
        f
    });
    assert_local_close(&closed, CloseReason::UnknownFlags);
    let (closed, _) = run_case(|mut f| {
        f[9] ^= 0b10;
        f
    });
    assert_local_close(&closed, CloseReason::EncryptionUnsupported);
}

#[test]
fn stream_ending_inside_a_frame_closes_socketclose() {
    // The line goes dead in the middle of the answer.
    let (closed, got) = run_case_cut(
        |mut f| {
            f.truncate(f.len() - 3);
            f
        },
        true,
    );
    assert!(got.is_empty(), "nothing was delivered: {got:?}");
    assert_eq!(closed.reason, CloseReason::SocketClose, "{closed}");
    assert_eq!(closed.initiator, Initiator::Transport, "{closed}");
}

#[test]
fn flipped_body_byte_is_delivered_changed() {
    // The protocol has no checksum: a flipped body byte arrives as another
    // message (here one letter of the text), and only the application can
    // tell. PROTOCOL.md says so.
    let (closed, got) = run_case(|mut f| {
        let last = f.len() - 1;
        f[last] ^= 0x20;
        f
    });
    assert_eq!(got, ["through a noisy linE"]);
    assert_local_close(&closed, CloseReason::UserRequest);
}

#[test]
fn corrupted_prefix_towards_the_server_closes_both_ends_with_its_reason() {
    // The server role of the driver: it closes with `packettoolarge` and
    // tells the client, which reports the server's reason.
    let (closed, got, server_closed) = run_case_with(
        |mut f| {
            f[0] ^= 0xff;
            f
        },
        false,
        true,
    );
    assert!(got.is_empty(), "nothing came back: {got:?}");
    assert_local_close(&server_closed, CloseReason::FrameTooLarge);
    assert_eq!(closed.reason, CloseReason::FrameTooLarge, "{closed}");
    assert_eq!(closed.initiator, Initiator::Peer, "{closed}");
}

#[test]
fn lost_bytes_leave_a_partial_frame_that_ends_in_frametimeout() {
    // Two body bytes lost, the line still up: the frame never completes.
    let (closed, got) = run_case_frame_timer(|mut f| {
        f.drain(12..14);
        f
    });
    assert!(got.is_empty(), "nothing was delivered: {got:?}");
    assert_local_close(&closed, CloseReason::FrameTimeout);
    assert_eq!(closed.reason.to_string(), "frametimeout");
}

#[test]
fn length_prefix_larger_within_the_maximum_ends_in_frametimeout() {
    let (closed, got) = run_case_frame_timer(|mut f| {
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) + 100;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    });
    assert!(got.is_empty(), "nothing was delivered: {got:?}");
    assert_local_close(&closed, CloseReason::FrameTimeout);
}

#[test]
fn length_prefix_smaller_reads_the_frames_tail_as_the_next_prefix() {
    // Four bytes short: the frame ends early (its body no longer decodes)
    // and its last four bytes, "line", are read as the next length
    // prefix: 0x6c696e65, far above the maximum frame.
    let (closed, got) = run_case(|mut f| {
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) - 4;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    });
    assert_eq!(got.len(), 1, "the shortened frame was delivered: {got:?}");
    assert!(got[0].starts_with('<'), "and did not decode: {got:?}");
    assert_local_close(&closed, CloseReason::FrameTooLarge);
}

/// A stream client whose registry has a name the server lacks says which
/// (issue 13, point 7), as the TCP client does.
#[test]
fn a_registry_mismatch_names_the_name() {
    use peng3dnet_core::rules::Rules;
    let (server_end, client_end) = UnixStream::pair().unwrap();
    let server = echo_server(server_end);
    let mut registry = echo::registry();
    registry
        .register_raw("t:only-at-the-client", None, Rules::NONE)
        .unwrap();
    let mut client =
        StreamConnection::client(client_end, registry, Postcard, StreamOptions::default()).unwrap();
    match client.wait_connected(T) {
        Err(ClientError::RegistryMismatch(m)) => {
            assert_eq!(m.peer_lacks, Some("t:only-at-the-client"), "{m}")
        }
        other => panic!("{:?}", other.err()),
    }
    drop(client);
    assert!(server.join().unwrap().is_some());
}
