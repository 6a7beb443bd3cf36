//! The timers a connection runs besides its handshake timer: the frame
//! timer (a frame started must complete), the idle timer (the peer must send
//! something) and the keepalive (send something when nothing was sent).
//!
//! Inputs carry no time ([`Connection::commit_received`](super::Connection::commit_received)
//! and [`Connection::handle_input`](super::Connection::handle_input) do not
//! take one), so the timers are brought up to date at the end of every poll
//! (which does), from what happened since the last: bytes arrived, a frame
//! was taken, a frame was queued.

use super::transmit::CLOSE_RESERVE;
use crate::buffer::Buffer;
use crate::codec::Codec;
use crate::registry::{internal, RegistryAccess};
use crate::time::{Duration, Instant, MaybeInstant};
use crate::types::Side;

/// The keepalive's body: a MessagePack empty map, so that a Python
/// reference peer (which decodes every body before it looks at the id)
/// decodes it and then ignores the packet by its rules.
pub(super) const KEEPALIVE_BODY: &[u8] = &[0x80];

/// The three timers of one connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timers {
    /// When the partly received frame must be complete (`frametimeout`).
    frame_at: MaybeInstant,
    /// The receive position of that frame ([`FrameDecoder::position`](crate::wire::FrameDecoder)):
    /// a frame taken since moves it, and the next frame's timer starts anew.
    frame_pos: u32,
    /// When the connection closes for lack of input (`idletimeout`).
    idle_at: MaybeInstant,
    /// When a keepalive is due unless something was queued before.
    keepalive_at: MaybeInstant,
    /// Bytes arrived since the timers were last brought up to date.
    received: bool,
}

/// What [`Timers::fire`] found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing.
    Nothing,
    /// A frame took too long: close with `frametimeout`.
    Frame,
    /// The peer sent nothing for the idle timeout: close with `idletimeout`.
    Idle,
    /// Nothing was queued for the keepalive interval: queue a keepalive.
    Keepalive,
}

impl Timers {
    /// The timers of a connection started at `now`.
    pub(super) fn new(now: Instant, idle: Duration, keepalive: Duration) -> Self {
        Timers {
            frame_at: MaybeInstant::NONE,
            frame_pos: 0,
            idle_at: MaybeInstant::new(now + idle),
            keepalive_at: MaybeInstant::new(now + keepalive),
            received: false,
        }
    }

    /// Bytes arrived (no time is known yet).
    #[inline(always)]
    pub(super) fn received(&mut self) {
        self.received = true;
    }

    /// Brings the receive timers up to date at `now`, the end of a poll:
    /// `partial` is the position of a partly received frame, if one is
    /// buffered.
    pub(super) fn update(
        &mut self,
        now: Instant,
        partial: Option<u32>,
        frame_timeout: Duration,
        idle_timeout: Duration,
    ) {
        if self.received {
            self.received = false;
            self.idle_at = MaybeInstant::new(now + idle_timeout);
        }
        match partial {
            None => self.frame_at = MaybeInstant::NONE,
            Some(pos) => {
                if self.frame_at == MaybeInstant::NONE || pos != self.frame_pos {
                    self.frame_pos = pos;
                    self.frame_at = MaybeInstant::new(now + frame_timeout);
                }
            }
        }
    }

    /// The earliest of the three.
    pub(super) fn earliest(&self) -> MaybeInstant {
        self.frame_at.min(self.idle_at).min(self.keepalive_at)
    }

    /// What is due at `now`. A keepalive found due is rescheduled here:
    /// `queued` says whether anything was queued since the last keepalive
    /// check (then none is needed; asked only then), `open` whether the
    /// connection is open (keepalives flow only then).
    pub(super) fn fire(
        &mut self,
        now: Instant,
        queued: impl FnOnce() -> bool,
        open: bool,
        keepalive: Duration,
    ) -> Due {
        let due = |at: MaybeInstant| at.get().is_some_and(|at| now >= at);
        if due(self.frame_at) {
            return Due::Frame;
        }
        if due(self.idle_at) {
            return Due::Idle;
        }
        if due(self.keepalive_at) {
            self.keepalive_at = MaybeInstant::new(now + keepalive);
            if open && !queued() {
                return Due::Keepalive;
            }
        }
        Due::Nothing
    }
}

/// The keepalive's packet id: the server sends `hello` again, the client
/// `settype`; on an open connection the receiver's rules refuse either (they
/// hold for the handshake's first states only) and its invalid action is
/// `ignore`, in the Python reference as here, where it is taken for a
/// keepalive and not reported.
pub(super) const fn keepalive_id(sender: Side) -> u32 {
    match sender {
        Side::Server => internal::HELLO,
        Side::Client => internal::SETTYPE,
    }
}

impl<C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> super::Inner<'_, C, T, N, G> {
    /// Queues a keepalive, if it fits (if it does not, bytes wait anyway).
    #[inline(never)]
    pub(super) fn queue_keepalive(&mut self) {
        let id = keepalive_id(self.side);
        let _ = self.tx.push_frame(
            id,
            CLOSE_RESERVE,
            None,
            |out| match out.first_mut() {
                Some(b) => {
                    *b = KEEPALIVE_BODY[0];
                    Ok(KEEPALIVE_BODY.len())
                }
                None => Err(crate::codec::CodecError::BufferTooSmall),
            },
            || Ok(KEEPALIVE_BODY.len()),
        );
        // The keepalive itself is not traffic that makes the next unneeded.
        self.tx.take_queued();
    }

    /// Whether a packet that its rules refused is the peer's keepalive.
    pub(super) fn is_keepalive(&self, packet_id: u32) -> bool {
        packet_id == keepalive_id(self.side.peer())
            && matches!(self.progress, super::progress::Progress::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn t(secs: u64) -> Instant {
        Instant::from_millis(secs * 1000)
    }

    #[test]
    fn a_frame_timer_follows_the_frame_not_the_first_byte() {
        let mut timers = Timers::new(t(0), Duration::MAX, Duration::MAX);
        timers.update(t(1), Some(0), S, Duration::MAX);
        // The same frame, still partial: the timer keeps its start.
        timers.update(t(1), Some(0), S, Duration::MAX);
        assert_eq!(timers.earliest().get(), Some(t(2)));
        // Another frame (the first was taken): it starts anew.
        timers.update(t(2), Some(100), S, Duration::MAX);
        assert_eq!(timers.earliest().get(), Some(t(3)));
        assert_eq!(timers.fire(t(3), || false, true, Duration::MAX), Due::Frame);
        // Nothing partial any more: no frame timer.
        timers.update(t(3), None, S, Duration::MAX);
        assert_eq!(timers.earliest().get(), None);
    }

    #[test]
    fn input_moves_the_idle_timer_and_only_input() {
        let mut timers = Timers::new(t(0), S, Duration::MAX);
        timers.update(t(0), None, S, S);
        assert_eq!(timers.fire(t(1), || false, true, Duration::MAX), Due::Idle);
        timers.received();
        timers.update(t(1), None, S, S);
        assert_eq!(
            timers.fire(t(1), || false, true, Duration::MAX),
            Due::Nothing
        );
        assert_eq!(timers.earliest().get(), Some(t(2)));
    }

    #[test]
    fn a_keepalive_is_due_only_when_open_and_nothing_was_queued() {
        let mut timers = Timers::new(t(0), Duration::MAX, S);
        assert_eq!(timers.fire(t(1), || false, false, S), Due::Nothing);
        assert_eq!(timers.fire(t(2), || true, true, S), Due::Nothing);
        assert_eq!(timers.fire(t(3), || false, true, S), Due::Keepalive);
        assert_eq!(timers.earliest().get(), Some(t(4)));
        // Not due yet: nothing, and the schedule stays.
        assert_eq!(timers.fire(t(3), || false, true, S), Due::Nothing);
        assert_eq!(timers.earliest().get(), Some(t(4)));
    }
}
