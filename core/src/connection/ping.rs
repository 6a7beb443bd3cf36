//! The `ping` connection type (`docs/PROTOCOL.md`, "Connection type
//! `ping`"): the client's request and round trip, the server's answer.

use super::config::PingServerConfig;
use super::progress::{Pending, Progress};
use super::receive::Outcome;
use super::Inner;
use crate::buffer::Buffer;
use crate::codec::Codec;
use crate::messages::{PeerInfo, PingRequest, PingResponse, PROTOVERSION};
use crate::registry::{internal, RegistryAccess};
use crate::time::{Instant, MaybeInstant};
use crate::types::{CloseReason, Mode, Side};

/// The `time` of a ping request: the instant in seconds, as the reference
/// sends it. The server only echoes it back (this client measures the round
/// trip with its own clock), so on bare metal (`target_os = "none"`) it is
/// whole seconds: no float arithmetic in a board's image, where every
/// connection's code carries the ping client.
#[cfg(not(target_os = "none"))]
fn request_time(now: Instant) -> f64 {
    now.as_secs_f64()
}

/// See the host's `request_time`.
#[cfg(target_os = "none")]
fn request_time(now: Instant) -> f64 {
    crate::time::whole_secs_f64(now.as_micros() / 1_000_000)
}

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    /// Enters `ping`: a client sends its request now; a server waits for it.
    pub(super) fn enter_ping(&mut self, deadline: MaybeInstant, now: Instant) {
        match self.side {
            Side::Client => {
                self.progress = Progress::AwaitingPong {
                    sent: now,
                    deadline,
                };
                self.mode = Mode::PING;
                let req = PingRequest {
                    time: request_time(now),
                };
                self.queue_internal(internal::PING_REQUEST, &req);
            }
            Side::Server => self.progress = Progress::AwaitingPing { deadline },
        }
    }

    /// (Server) a packet on a `ping` connection: the request is answered
    /// (the connection then closes with `pingcomplete` once it left);
    /// anything else closes.
    pub(super) fn server_ping(&mut self, packet_id: u32, body: &[u8]) -> Outcome {
        match packet_id {
            internal::PING_REQUEST => {
                let Ok(req) = self.codec.decode::<PingRequest>(body) else {
                    self.close(CloseReason::InvalidPingPacket);
                    return Outcome::Nothing;
                };
                self.mode = Mode::PING;
                let ping = self.config.ping.unwrap_or(PingServerConfig {
                    release: "",
                    data: &[],
                });
                let answer = PingResponse {
                    oldmsg: req,
                    peng3dnet: PeerInfo {
                        version: self.config.version,
                        release: ping.release,
                        protoversion: PROTOVERSION,
                    },
                    data: ping.data,
                };
                self.queue_internal(internal::PING_RESPONSE, &answer);
                if !self.is_closed() {
                    self.pending = Some(Pending::PingAnswered);
                }
            }
            internal::PING_RESPONSE => self.close(CloseReason::PingInvalidSide),
            _ => self.close(CloseReason::InvalidPingPacket),
        }
        Outcome::Nothing
    }

    /// (Client) a packet on a `ping` connection: the answer closes with
    /// `pingcomplete` and reports the round trip; anything else closes.
    pub(super) fn client_ping(&mut self, packet_id: u32, now: Instant) -> Outcome {
        match packet_id {
            internal::PING_RESPONSE => {
                let sent = match self.progress {
                    Progress::AwaitingPong { sent, .. } => sent,
                    _ => now,
                };
                let delay = now - sent;
                self.close(CloseReason::PingComplete);
                Outcome::Pong(delay)
            }
            internal::PING_REQUEST => {
                self.close(CloseReason::PingInvalidSide);
                Outcome::Nothing
            }
            _ => {
                self.close(CloseReason::InvalidPingPacket);
                Outcome::Nothing
            }
        }
    }
}
