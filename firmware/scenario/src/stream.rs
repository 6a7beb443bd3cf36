//! The client scenario over a byte stream (a UART): the same steps as
//! [`client`](crate::client) over one `embedded-io-async` reader and
//! writer, with [`Session::run`], and no network stack.
//!
//! A serial link carries one connection at a time, so the ping is a second
//! connection *after* the first one closed, over the same link (the host's
//! `peng3dnet serve --serial` serves one connection after another): the
//! handshake, 1,000 checked echoes, a packet refused by its rules, a close
//! with `userrequest`, then a `ping` connection that ends with
//! `pingcomplete`.

use embassy_futures::join::join;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::Instant;
use embedded_io_async::{Read, Write};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::registry::Registry;
use peng3dnet_core::{CloseReason, Config, Initiator};
use peng3dnet_embassy::{Resources, Session};

use crate::client::{echoes, handshake, refusal, ClientSession, ClientSummary, ECHOES, RX, TX};
use crate::echo;
use crate::{fail, say, Fail, Log};

/// The buffers of the scenario over a stream (about 3.5 KiB; no socket
/// buffers): give them a static home (`static_cell::ConstStaticCell`).
pub struct StreamBufs {
    session: Resources<RX, TX>,
    body: [u8; RX],
    ping: Resources<512, 256>,
}

impl StreamBufs {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        StreamBufs {
            session: Resources::new(),
            body: [0; RX],
            ping: Resources::new(),
        }
    }
}

impl Default for StreamBufs {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the scenario over `reader` and `writer` (the two halves of one
/// link to the host's `peng3dnet serve --serial`), writing its progress to
/// `log`. The caller bounds the whole run (`with_timeout`) if it wants to.
pub async fn run<R: Read, W: Write, L: Log>(
    mut reader: R,
    mut writer: W,
    bufs: &mut StreamBufs,
    log: &L,
) -> Result<ClientSummary, Fail> {
    let StreamBufs {
        session: session_res,
        body,
        ping: ping_res,
    } = bufs;
    say!(
        log,
        "client: waiting for the server's hello on the serial link"
    );
    let config = Config::new();
    let mut registry = echo::client_registry().map_err(|e| fail!("registry: {}", e))?;
    let t0 = Instant::now();
    let session: ClientSession<'_> =
        Session::client(&config, &mut registry, Postcard, session_res, "classic")
            .map_err(|e| fail!("session: {:?}", e))?;
    let app = async {
        handshake(&session, log, t0).await?;
        echoes(&session, &mut body[..], log).await?;
        refusal(&session, &mut body[..], log).await?;
        session.close(CloseReason::UserRequest);
        Ok::<(), Fail>(())
    };
    let (outcome, app_result) = join(session.run(&mut reader, &mut writer), app).await;
    app_result?;
    let closed = outcome.map_err(|e| fail!("transport: {:?}", e))?;
    if closed.reason != CloseReason::UserRequest || closed.initiator != Initiator::Local {
        return Err(fail!(
            "closed with {} by {:?}, expected userrequest by us",
            closed.reason,
            closed.initiator
        ));
    }
    say!(log, "client: closed with {} (by us)", closed.reason);

    // The ping: the next connection on the same link.
    let mut ping_registry = Registry::<{ echo::REGISTRY }>::new();
    let ping: Session<'_, NoopRawMutex, Postcard, { echo::REGISTRY }, _> =
        Session::client(&config, &mut ping_registry, Postcard, ping_res, "ping")
            .map_err(|e| fail!("ping session: {:?}", e))?;
    let (outcome, pong) = join(ping.run(&mut reader, &mut writer), ping.wait_pong()).await;
    let rtt = pong.map_err(|c| fail!("ping: closed ({}, {:?})", c.reason, c.initiator))?;
    let closed = outcome.map_err(|e| fail!("ping transport: {:?}", e))?;
    if closed.reason != CloseReason::PingComplete {
        return Err(fail!("ping closed with {}", closed.reason));
    }
    say!(
        log,
        "client: ping (a second connection on the link) answered in {} us, closed with pingcomplete",
        rtt.as_micros()
    );
    say!(
        log,
        "client: RAM of the echo connection: {} + {} bytes of buffers, session {} bytes, no socket",
        RX,
        TX,
        core::mem::size_of::<ClientSession<'static>>()
    );
    Ok(ClientSummary {
        echoes: ECHOES,
        elapsed: t0.elapsed(),
    })
}
