//! How far a connection has come: [`Progress`], one value whose variants
//! carry what each step needs, the wire [`State`] derived from it, and the
//! transitions every step shares (open, close, the events they leave).

use super::conntype::ConnType;
use super::event::Event;
use super::Inner;
use crate::codec::Codec;
use crate::messages::CloseConn;
use crate::registry::{internal, RegistryAccess};
use crate::time::{Instant, MaybeInstant};
use crate::types::{CloseReason, Closed, Initiator, State};
use core::fmt;

/// How far a connection has come, named for what it waits for
/// (`docs/PROTOCOL.md`, "Handshake", "Connection type `ping`" and
/// "Closing"). The wire [`State`] is derived from it ([`Progress::state`]).
///
/// Every step before [`Open`](Self::Open) carries the handshake timer's
/// `deadline` ([`Config::handshake_timeout`](super::Config::handshake_timeout)
/// after the start; none when that saturates), which closes the connection
/// with `handshaketimeout` if it passes. A `ping` connection never opens: its
/// timer runs until it closes.
///
/// `repr(u8)` lays each variant out in field order after its tag byte, which
/// the order of the fields uses: the deadline at one offset in every timed
/// variant and the state at another in both that carry one, so that deriving
/// them takes little code; the small fields first, so that `Closed` needs
/// no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Progress {
    /// Client, HELLOWAIT: waits for the server's `hello`, then asks for
    /// `target` in `settype`.
    AwaitingHello {
        /// The connection type the client asks for (never `_notset`).
        target: ConnType,
        /// When the handshake timer fires.
        deadline: MaybeInstant,
    },
    /// Server, WAITTYPE: `hello` is queued; waits for the client's `settype`.
    AwaitingType {
        /// When the handshake timer fires.
        deadline: MaybeInstant,
    },
    /// `classic`, HANDSHAKE_WAIT1: the client waits for `handshake`, the
    /// server (which sent it) for `handshake.accept`.
    Handshake {
        /// When the handshake timer fires.
        deadline: MaybeInstant,
    },
    /// `ping` client, ACTIVE: its request left at `sent`; waits for the
    /// answer.
    AwaitingPong {
        /// When the handshake timer fires.
        deadline: MaybeInstant,
        /// When the request was queued, to measure the round trip.
        sent: Instant,
    },
    /// `ping` server, ACTIVE: waits for requests and answers each.
    AwaitingPing {
        /// When the handshake timer fires.
        deadline: MaybeInstant,
    },
    /// A custom connection type whose [`init`](super::ConnTypeHooks::init)
    /// chose a state that is not open (neither ACTIVE nor LOGGEDIN).
    CustomSetup {
        /// The state `init` chose.
        state: State,
        /// The type's index in [`Config::conntypes`](super::Config::conntypes).
        index: u16,
        /// When the handshake timer fires.
        deadline: MaybeInstant,
    },
    /// Connected: `classic` after its handshake, or a custom type whose
    /// `init` chose an open state. Application packets flow.
    Open {
        /// ACTIVE, or LOGGEDIN once the application set it.
        state: OpenState,
        /// `classic` or a custom type (`ping` and `_notset` never open).
        conntype: ConnType,
    },
    /// CLOSED: closed, or closing while the `closeconn` drains.
    Closed {
        /// Who closed it.
        initiator: Initiator,
        /// The connection type agreed before (`_notset` if none was).
        conntype: ConnType,
        /// Why.
        reason: CloseReason,
    },
}

impl Progress {
    /// The state as the protocol numbers it, which SmartPacket rules match.
    #[inline]
    pub(super) fn state(&self) -> State {
        match self {
            Progress::AwaitingHello { .. } => State::HelloWait,
            Progress::AwaitingType { .. } => State::WaitType,
            Progress::Handshake { .. } => State::HandshakeWait1,
            Progress::AwaitingPong { .. } | Progress::AwaitingPing { .. } => State::Active,
            Progress::CustomSetup { state, .. } => *state,
            Progress::Open { state, .. } => state.state(),
            Progress::Closed { .. } => State::Closed,
        }
    }

    /// The connection type agreed so far (`_notset` before `settype`).
    // Out of line: matched in eight places (firmware flash); on a host the
    // packet path reads an open connection's directly (`state_and_conntype`,
    // `packet_conntype`).
    #[inline(never)]
    pub(super) fn conntype(&self) -> ConnType {
        match self {
            Progress::AwaitingHello { .. } | Progress::AwaitingType { .. } => ConnType::NotSet,
            Progress::Handshake { .. } => ConnType::Classic,
            Progress::AwaitingPong { .. } | Progress::AwaitingPing { .. } => ConnType::Ping,
            Progress::CustomSetup { index, .. } => ConnType::Custom(*index),
            Progress::Open { conntype, .. } | Progress::Closed { conntype, .. } => *conntype,
        }
    }

    /// The wire state and the connection type, as a packet's rules need
    /// them: read at once from an open connection (the common case, on every
    /// packet received or sent), derived otherwise.
    #[inline(always)]
    pub(super) fn state_and_conntype(&self) -> (State, ConnType) {
        match self {
            Progress::Open { state, conntype } => (state.state(), *conntype),
            other => (other.state(), other.conntype()),
        }
    }

    /// The connection type, as a packet's path needs it: on a host read at
    /// once from an open connection (as in `state_and_conntype`); on bare
    /// metal always through the out-of-line `conntype` (flash).
    #[inline(always)]
    pub(super) fn packet_conntype(&self) -> ConnType {
        #[cfg(not(target_os = "none"))]
        if let Progress::Open { conntype, .. } = self {
            return *conntype;
        }
        self.conntype()
    }

    /// When the handshake timer fires; none once open or closed.
    pub(super) fn deadline(&self) -> MaybeInstant {
        match self {
            Progress::AwaitingHello { deadline, .. }
            | Progress::AwaitingType { deadline }
            | Progress::Handshake { deadline }
            | Progress::AwaitingPong { deadline, .. }
            | Progress::AwaitingPing { deadline }
            | Progress::CustomSetup { deadline, .. } => *deadline,
            Progress::Open { .. } | Progress::Closed { .. } => MaybeInstant::NONE,
        }
    }

    /// Whether the connection is closed or closing.
    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        matches!(self, Progress::Closed { .. })
    }

    /// How the connection ended, once it has. Out of line on bare metal:
    /// the clone of a reason (a `heapless::String` in `Other`) was inlined
    /// wherever an adapter asks, several times per image.
    #[cfg_attr(target_os = "none", inline(never))]
    pub(super) fn closed(&self) -> Option<Closed> {
        match self {
            Progress::Closed {
                reason, initiator, ..
            } => Some(Closed {
                reason: reason.clone(),
                initiator: *initiator,
            }),
            _ => None,
        }
    }

    /// Whether it is a `ping` connection that has not closed.
    #[inline]
    pub(super) fn is_ping(&self) -> bool {
        matches!(
            self,
            Progress::AwaitingPong { .. } | Progress::AwaitingPing { .. }
        )
    }
}

/// Its wire state and what it waits for, `HANDSHAKE_WAIT1 (handshake)`, or
/// why it closed, `CLOSED (userrequest, Local)`.
impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self {
            Progress::AwaitingHello { .. } => "awaiting hello",
            Progress::AwaitingType { .. } => "awaiting settype",
            Progress::Handshake { .. } => "handshake",
            Progress::AwaitingPong { .. } => "awaiting ping answer",
            Progress::AwaitingPing { .. } => "awaiting ping request",
            Progress::CustomSetup { .. } => "custom type setup",
            Progress::Open { .. } => "open",
            Progress::Closed {
                reason, initiator, ..
            } => return write!(f, "CLOSED ({reason}, {initiator:?})"),
        };
        write!(f, "{} ({step})", self.state())
    }
}

/// The states an open connection may be in (numbered as [`State`] numbers
/// them, so that converting costs nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum OpenState {
    /// ACTIVE.
    Active = State::Active as u8,
    /// LOGGEDIN.
    LoggedIn = State::LoggedIn as u8,
}

impl OpenState {
    /// The open state `state` names, if it is one.
    pub(super) fn from_state(state: State) -> Option<OpenState> {
        match state {
            State::Active => Some(OpenState::Active),
            State::LoggedIn => Some(OpenState::LoggedIn),
            _ => None,
        }
    }

    /// Its wire state.
    #[inline]
    pub(super) fn state(self) -> State {
        match self {
            OpenState::Active => State::Active,
            OpenState::LoggedIn => State::LoggedIn,
        }
    }
}

/// The event a change of [`Progress`] leaves for the next
/// [`poll`](super::Connection::poll), which hands it out before it looks at
/// another frame. One slot is enough: each change that sets it is the last
/// thing its frame does (so the same poll hands it out), except a close,
/// after which nothing else happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    /// [`Event::Connected`].
    Connected,
    /// [`Event::PingAnswered`].
    PingAnswered,
    /// [`Event::Closed`], with the reason in [`Progress::Closed`].
    Closed,
}

impl Pending {
    /// The event it stands for; a close's reason comes from `progress`,
    /// which [`finish`](Inner::finish) closed when it left this.
    pub(super) fn event<'e, C>(self, progress: &Progress) -> Event<'e, C> {
        match self {
            Pending::Connected => Event::Connected,
            Pending::PingAnswered => Event::PingAnswered,
            // `closed` is always some here (see above).
            Pending::Closed => Event::Closed(progress.closed().unwrap_or(Closed::SOCKET_CLOSED)),
        }
    }
}

impl<'a, C: Codec, T: crate::buffer::Buffer, const N: usize, G: RegistryAccess<N>>
    Inner<'a, C, T, N, G>
{
    /// Whether the connection is closed or closing.
    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        self.progress.is_closed()
    }

    /// The connection is established: the handshake timer stops and
    /// [`Event::Connected`] is reported.
    pub(super) fn open(&mut self, conntype: ConnType, state: OpenState) {
        self.progress = Progress::Open { conntype, state };
        self.pending = Some(Pending::Connected);
    }

    /// Starts a local close: queues `closeconn` and reports the reason.
    // Out of line: the poll path calls it from a dozen error branches.
    #[inline(never)]
    pub(super) fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let msg = CloseConn {
            reason: reason.as_wire(),
        };
        // The reserve holds a closeconn with the longest reason; should a
        // codec need more, the peer is not told and sees the socket close.
        let _ = self
            .tx
            .push_message(internal::CLOSECONN, 0, None, &self.codec, &msg);
        self.finish(reason, Initiator::Local);
    }

    /// The connection is closed: the timer stops and [`Event::Closed`] is
    /// reported.
    // Out of line: four callers (firmware flash).
    #[inline(never)]
    pub(super) fn finish(&mut self, reason: CloseReason, initiator: Initiator) {
        self.progress = Progress::Closed {
            conntype: self.progress.conntype(),
            reason,
            initiator,
        };
        self.pending = Some(Pending::Closed);
    }

    /// The event left by the last change, once (built when it is handed
    /// out, [`Pending::event`]: the polls pass a byte around, not an
    /// event with a close reason in it).
    #[inline(always)]
    pub(super) fn take_pending(&mut self) -> Option<Pending> {
        // Usually none waits: one load and one branch on the poll path, no
        // store.
        self.pending?;
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_state_conntype_and_timer_follow_from_the_progress() {
        let at = MaybeInstant::new(Instant::from_millis(5));
        let none = MaybeInstant::NONE;
        let closed = Progress::Closed {
            conntype: ConnType::Ping,
            reason: CloseReason::PingComplete,
            initiator: Initiator::Local,
        };
        // (progress, wire state, connection type, deadline, display)
        let cases = [
            (
                Progress::AwaitingHello {
                    target: ConnType::Ping,
                    deadline: at,
                },
                State::HelloWait,
                ConnType::NotSet,
                at,
                "HELLOWAIT (awaiting hello)",
            ),
            (
                Progress::AwaitingType { deadline: at },
                State::WaitType,
                ConnType::NotSet,
                at,
                "WAITTYPE (awaiting settype)",
            ),
            (
                Progress::Handshake { deadline: at },
                State::HandshakeWait1,
                ConnType::Classic,
                at,
                "HANDSHAKE_WAIT1 (handshake)",
            ),
            (
                Progress::AwaitingPong {
                    deadline: at,
                    sent: Instant::ZERO,
                },
                State::Active,
                ConnType::Ping,
                at,
                "ACTIVE (awaiting ping answer)",
            ),
            (
                Progress::AwaitingPing { deadline: none },
                State::Active,
                ConnType::Ping,
                none,
                "ACTIVE (awaiting ping request)",
            ),
            (
                Progress::CustomSetup {
                    index: 2,
                    state: State::WaitType,
                    deadline: at,
                },
                State::WaitType,
                ConnType::Custom(2),
                at,
                "WAITTYPE (custom type setup)",
            ),
            (
                Progress::Open {
                    conntype: ConnType::Classic,
                    state: OpenState::LoggedIn,
                },
                State::LoggedIn,
                ConnType::Classic,
                none,
                "LOGGEDIN (open)",
            ),
            (
                closed,
                State::Closed,
                ConnType::Ping,
                none,
                "CLOSED (pingcomplete, Local)",
            ),
        ];
        for (progress, state, conntype, deadline, shown) in cases {
            assert_eq!(progress.state(), state, "{progress:?}");
            assert_eq!(progress.conntype(), conntype, "{progress:?}");
            assert_eq!(progress.deadline(), deadline, "{progress:?}");
            assert_eq!(progress.is_closed(), state == State::Closed);
            assert_eq!(std::format!("{progress}"), shown);
        }
        for state in [State::Active, State::LoggedIn] {
            assert_eq!(
                OpenState::from_state(state).map(OpenState::state),
                Some(state)
            );
        }
        for state in [
            State::Init,
            State::HandshakeWait1,
            State::WaitType,
            State::Closed,
        ] {
            assert_eq!(OpenState::from_state(state), None);
        }
    }
}
