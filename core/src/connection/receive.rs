//! What a received frame does: the poll path from the frame decoder through
//! `closeconn`, the connection type's dispatch and the SmartPacket rules to
//! the handshake, the ping exchange or an application packet.

use super::conntype::{ConnType, Dispatch};
use super::event::{Event, IgnoreCause, Incoming};
use super::handshake::Role;
use super::outbox::{Outbox, Take};
use super::progress::{Pending, Progress};
use super::{Connection, Inner};
use crate::buffer::Buffer;
use crate::codec::Codec;
use crate::messages::CloseConnIn;
use crate::registry::{internal, RegistryAccess, FIRST_AUTO_ID, INTERNAL_COUNT};
use crate::rules::{InvalidAction, RuleContext, Rules, Violation};
use crate::time::{Duration, Instant};
use crate::types::{CloseReason, Initiator, State};
use crate::wire::{Flags, FrameDecoder, FrameError, FRAME_OVERHEAD};
use core::ops::Range;

/// What [`Connection::poll`] found, before it borrows the receive buffer.
/// Small (no event is built yet): it is returned through every poll.
pub(super) enum Found {
    /// The event a change of progress left (built by [`into_event`](Self::into_event)).
    Pending(Pending),
    /// A frame's outcome; `start` is where its length prefix is.
    Frame {
        packet_id: u32,
        start: usize,
        body: Range<usize>,
        outcome: Outcome,
    },
}

impl Found {
    /// The event, borrowing the frame's body from the receive buffer (a
    /// close's reason from `progress`).
    #[inline(always)]
    pub(super) fn into_event<'b, B: Buffer, C: Clone>(
        self,
        rx: &'b FrameDecoder<B>,
        codec: &C,
        progress: &Progress,
    ) -> Event<'b, C> {
        let (packet_id, body, outcome) = match self {
            Found::Pending(pending) => return pending.event(progress),
            Found::Frame {
                packet_id,
                body,
                outcome,
                ..
            } => (packet_id, rx.stored(body), outcome),
        };
        match outcome {
            Outcome::Ignored(cause) => Event::Ignored { packet_id, cause },
            Outcome::Packet(name) => {
                Event::Packet(Incoming::new(packet_id, name, body, codec.clone()))
            }
            Outcome::ConnTypePacket(name) => {
                Event::ConnTypePacket(Incoming::new(packet_id, name, body, codec.clone()))
            }
            Outcome::Pong(delay) => Event::Pong { delay, body },
            // `next_found` reports frames that yield an event only.
            Outcome::Nothing => Event::Ignored {
                packet_id,
                cause: IgnoreCause::UnknownId,
            },
        }
    }
}

/// What a frame turned into.
pub(super) enum Outcome {
    /// Nothing to report (a protocol packet, or the frame closed the
    /// connection).
    Nothing,
    /// An application packet that passed its rules, with its name.
    Packet(Option<&'static str>),
    /// A packet a custom type consumed, with its name if registered.
    ConnTypePacket(Option<&'static str>),
    /// The ping answer, after this round trip.
    Pong(Duration),
    /// A dropped packet.
    Ignored(IgnoreCause),
}

impl<'a, C, R, T, const N: usize, G> Connection<'a, C, R, T, N, G>
where
    C: Codec,
    R: Buffer,
    T: Buffer,
    G: RegistryAccess<N>,
{
    /// [`poll`](Connection::poll)'s common case, tried before
    /// [`next_found`](Self::next_found): an open `classic` connection with no
    /// event pending, and a whole uncompressed frame of a registered
    /// application id whose rules pass. Takes the frame and returns its id,
    /// its registry name and its body's range; `None` (nothing taken) for
    /// anything else, which `next_found` then handles, this frame included,
    /// with the same outcome. Rules that name a connection type are left to
    /// `next_found` (they compare names).
    #[inline(always)]
    pub(super) fn next_fast(&mut self) -> Option<(u32, &'static str, Range<usize>)> {
        let Connection { inner, rx } = self;
        let (
            Progress::Open {
                state,
                conntype: ConnType::Classic,
            },
            None,
        ) = (&inner.progress, &inner.pending)
        else {
            return None;
        };
        let ((packet_id, name), body) = rx.take_plain_if(|packet_id| {
            let entries = inner.registry.registry().entries();
            // The entry handed out last, else the one at the id's position in
            // registration order (automatic ids count up from 64 after the
            // internal packets), else a search.
            let entry = match entries.get(usize::from(inner.fast_hint)) {
                Some(entry) if entry.id == packet_id => entry,
                _ => {
                    let guess = (packet_id.wrapping_sub(FIRST_AUTO_ID) as usize)
                        .wrapping_add(INTERNAL_COUNT);
                    let index = match entries.get(guess) {
                        Some(entry) if entry.id == packet_id => guess,
                        _ => entries.iter().position(|e| e.id == packet_id)?,
                    };
                    // The registry holds at most `u16::MAX` entries.
                    inner.fast_hint = index as u16;
                    &entries[index]
                }
            };
            let rules = &entry.rules;
            // The protocol's own packets are left to `next_found`, and so
            // is `Rules::check_receive`'s breach; the connection type's name
            // is not compared here. One branch.
            let broken = (packet_id < FIRST_AUTO_ID)
                | rules.conntype.is_some()
                | rules.side.is_some_and(|side| side != inner.side)
                | rules.state.is_some_and(|s| s != state.state())
                | rules.mode.is_some_and(|mode| mode != inner.mode);
            if broken {
                return None;
            }
            Some((packet_id, entry.name))
        })?;
        Some((packet_id, name, body))
    }

    /// [`poll_with`](Connection::poll_with) with this side's protocol code
    /// only (see [`Role`]: `role` MUST be the connection's side, as
    /// [`Role::client`] for a connection made by
    /// [`client`](Connection::client)).
    pub fn poll_with_role<X>(
        &mut self,
        now: Instant,
        role: Role<'a, C, T, N, G>,
        f: impl FnOnce(Event<'_, C>, &mut Outbox<'_, 'a, C, T, N, G>) -> (Take, X),
    ) -> Option<X> {
        let found = self.next_found_role(now, false, role)?;
        Some(self.hand_out(found, f))
    }

    /// Like [`poll_with_role`](Self::poll_with_role), but hands `f` the
    /// application packets only ([`Event::Packet`] and
    /// [`Event::ConnTypePacket`], as their [`Incoming`]) and reports every
    /// other step as a [`ProtocolStep`](super::ProtocolStep) (`Err`), its
    /// event never built: what a session's receiver needs (on a board,
    /// building a close's event to drop it cost flash). `f` returns
    /// [`Take::Keep`] to leave the packet buffered, as with `poll_with`.
    /// `None` when every received frame is processed.
    // Out of line on bare metal, so that `f` (a session's receiver) is
    // inlined here rather than into the caller's future (flash).
    #[cfg_attr(target_os = "none", inline(never))]
    pub fn poll_packet_role<X>(
        &mut self,
        now: Instant,
        role: Role<'a, C, T, N, G>,
        f: impl FnOnce(Incoming<&[u8], C>, &mut Outbox<'_, 'a, C, T, N, G>) -> (Take, X),
    ) -> Option<Result<X, super::ProtocolStep>> {
        let found = self.next_found_role(now, false, role)?;
        let Found::Frame {
            packet_id,
            start,
            body,
            outcome: Outcome::Packet(name) | Outcome::ConnTypePacket(name),
        } = found
        else {
            return Some(Err(super::ProtocolStep::of(found)));
        };
        let packet = Incoming::new(
            packet_id,
            name,
            self.rx.stored(body),
            self.inner.codec.clone(),
        );
        let mut outbox = Outbox {
            inner: &mut self.inner,
        };
        let (take, x) = f(packet, &mut outbox);
        if take == Take::Keep && !self.inner.is_closed() {
            self.rx.unread(start);
        }
        Some(Ok(x))
    }

    /// Hands what a poll found to `f` as an event, with the outbox, and
    /// puts a packet `f` keeps ([`Take::Keep`]) back for the next poll: the
    /// tail of [`poll_with`](Connection::poll_with) and
    /// [`poll_with_role`](Self::poll_with_role).
    pub(super) fn hand_out<X>(
        &mut self,
        found: Found,
        f: impl FnOnce(Event<'_, C>, &mut Outbox<'_, 'a, C, T, N, G>) -> (Take, X),
    ) -> X {
        let frame_start = match &found {
            Found::Frame { start, .. } => Some(*start),
            Found::Pending(_) => None,
        };
        let event = found.into_event(&self.rx, &self.inner.codec, &self.inner.progress);
        let is_packet = matches!(event, Event::Packet(_) | Event::ConnTypePacket(_));
        let mut outbox = Outbox {
            inner: &mut self.inner,
        };
        let (take, x) = f(event, &mut outbox);
        if let (Take::Keep, true, Some(start)) = (take, is_packet, frame_start) {
            if !self.inner.is_closed() {
                self.rx.unread(start);
            }
        }
        x
    }

    /// [`poll_protocol`](Connection::poll_protocol) with this side's
    /// protocol code only (see [`poll_with_role`](Self::poll_with_role)).
    pub fn poll_protocol_role(
        &mut self,
        now: Instant,
        role: Role<'a, C, T, N, G>,
    ) -> Option<Event<'_, C>> {
        let found = self.next_found_role(now, true, role)?;
        Some(found.into_event(&self.rx, &self.inner.codec, &self.inner.progress))
    }

    /// [`poll_protocol_role`](Self::poll_protocol_role) for a driver that
    /// hands no event out (a session, which records the ping's round trip
    /// and nothing else): what the step did, and no event is built (on a
    /// board, building them cost flash).
    pub fn step_protocol_role(
        &mut self,
        now: Instant,
        role: Role<'a, C, T, N, G>,
    ) -> Option<super::ProtocolStep> {
        Some(super::ProtocolStep::of(
            self.next_found_role(now, true, role)?,
        ))
    }

    /// The state machine out of line for the two polls above, as
    /// `next_found_shared` is for the others.
    #[inline(never)]
    fn next_found_role(
        &mut self,
        now: Instant,
        protocol_only: bool,
        role: Role<'a, C, T, N, G>,
    ) -> Option<Found> {
        let found = self.next_found(now, protocol_only, role);
        if found.is_none() {
            self.update_timers(now);
        }
        found
    }

    /// Runs the state machine up to the next event; what it found refers to
    /// the receive buffer by range, so the caller decides what to borrow.
    #[inline(always)]
    pub(super) fn next_found(
        &mut self,
        now: Instant,
        protocol_only: bool,
        role: Role<'a, C, T, N, G>,
    ) -> Option<Found> {
        if let Some(pending) = self.inner.take_pending() {
            return Some(Found::Pending(pending));
        }
        // Every branch that changed the progress ends here, at one copy of
        // `take_pending` (flash).
        loop {
            if self.inner.is_closed() {
                return None;
            }
            let (packet_id, flags, range) = match self.rx.next_frame_range() {
                Ok(Some(frame)) => frame,
                Ok(None) if self.inner.transport_ended => {
                    self.inner
                        .finish(CloseReason::SocketClose, Initiator::Transport);
                    break;
                }
                Ok(None) => return None,
                Err(e) => {
                    self.inner.frame_error(e);
                    break;
                }
            };
            let frame_start = range.start - FRAME_OVERHEAD;
            if protocol_only && packet_id >= FIRST_AUTO_ID && !self.inner.progress.is_ping() {
                // An application frame: leave it for `poll`.
                self.rx.unread(frame_start);
                return None;
            }
            let (flags, body_range) = match self.inflate(flags, range) {
                Ok(inflated) => inflated,
                Err(reason) => {
                    self.inner.close(reason);
                    break;
                }
            };
            let body = self.rx.stored(body_range.clone());
            match self.inner.handle_frame(packet_id, flags, body, now, role) {
                Outcome::Nothing => {
                    if self.inner.pending.is_some() {
                        break;
                    }
                }
                outcome => {
                    return Some(Found::Frame {
                        packet_id,
                        start: frame_start,
                        body: body_range,
                        outcome,
                    })
                }
            }
        }
        self.inner.take_pending().map(Found::Pending)
    }

    /// Inflates a compressed body when decompression is on; otherwise hands
    /// the frame on as it is.
    #[cfg(feature = "zlib")]
    fn inflate(
        &mut self,
        flags: Flags,
        range: Range<usize>,
    ) -> Result<(Flags, Range<usize>), CloseReason> {
        if !flags.contains(Flags::COMPRESSED) || !self.inner.config.decompress {
            return Ok((flags, range));
        }
        match self.rx.inflate(range) {
            Ok(inflated) => Ok((Flags(flags.0 & !Flags::COMPRESSED.0), inflated)),
            Err(_) => Err(CloseReason::DecompressionFailed),
        }
    }

    #[cfg(not(feature = "zlib"))]
    fn inflate(
        &mut self,
        flags: Flags,
        range: Range<usize>,
    ) -> Result<(Flags, Range<usize>), CloseReason> {
        Ok((flags, range))
    }
}

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    /// What `rules` are checked against, on receive and on send; `state` and
    /// `conntype` are the progress's (the caller has them at hand). The
    /// connection type's name is looked up only for rules that compare it
    /// (few do; the lookup was a cost on every packet).
    pub(super) fn rule_context(
        &self,
        rules: &Rules,
        state: State,
        conntype: ConnType,
    ) -> RuleContext<'a> {
        RuleContext {
            side: self.side,
            state,
            mode: self.mode,
            conntype: match rules.conntype {
                Some(_) => conntype.name(&self.config),
                None => "",
            },
            security: self.security,
        }
    }

    /// `rules` checked against this connection: for a packet received, or
    /// (`sending`) for one about to be sent. Out of line on bare metal,
    /// where the poll path and every send share one copy (flash); inlined
    /// on a host, where it is on every packet's path.
    #[cfg_attr(target_os = "none", inline(never))]
    #[cfg_attr(not(target_os = "none"), inline)]
    pub(super) fn check_rules(&self, rules: &Rules, sending: bool) -> Result<(), Violation> {
        let (state, conntype) = self.progress.state_and_conntype();
        let context = self.rule_context(rules, state, conntype);
        if sending {
            rules.check_send(&context)
        } else {
            rules.check_receive(&context)
        }
    }

    /// The peer's `closeconn`: accepted in any state; a body that does not
    /// decode still closes.
    // Out of the per-packet loop on a host, as the side's `Role` is; inlined
    // into its one caller on bare metal (flash).
    #[cfg_attr(not(target_os = "none"), inline(never))]
    fn handle_closeconn(&mut self, body: &[u8]) {
        let reason = match self.codec.decode::<CloseConnIn>(body) {
            Ok(msg) => CloseReason::from_wire_bytes(msg.reason.map(|r| r.0)),
            Err(_) => CloseReason::Unspecified,
        };
        self.tx.clear();
        self.finish(reason, Initiator::Peer);
    }

    /// Closes for a frame the decoder refused.
    fn frame_error(&mut self, e: FrameError) {
        self.close(match e {
            FrameError::TooLarge { .. } => CloseReason::FrameTooLarge,
            FrameError::TooShort { .. } => CloseReason::MalformedFrame,
            FrameError::UnknownFlags { .. } => CloseReason::UnknownFlags,
            FrameError::EncryptionUnsupported => CloseReason::EncryptionUnsupported,
        });
    }

    /// Handles one frame: `closeconn` in any state, then what the connection
    /// type does with ids from 64, then the registry's rules, then the
    /// protocol's own packets.
    fn handle_frame(
        &mut self,
        packet_id: u32,
        flags: Flags,
        body: &[u8],
        now: Instant,
        role: Role<'a, C, T, N, G>,
    ) -> Outcome {
        if flags.contains(Flags::COMPRESSED) {
            // Inflated by the caller when enabled; here only if it is not.
            self.close(CloseReason::CompressionNotEnabled);
            return Outcome::Nothing;
        }
        if packet_id == internal::CLOSECONN {
            self.handle_closeconn(body);
            return Outcome::Nothing;
        }
        if packet_id >= FIRST_AUTO_ID {
            let conntype = self.progress.packet_conntype();
            match conntype {
                ConnType::Ping => return role.handle(self, packet_id, body, now),
                ConnType::Custom(_) => {
                    let dispatch = conntype
                        .hooks(&self.config)
                        .map_or(Dispatch::Registry, |h| h.receive(self.side, packet_id));
                    match dispatch {
                        Dispatch::Registry => {}
                        Dispatch::Consume => {
                            let name = self.registry.registry().by_id(packet_id).map(|e| e.name);
                            return Outcome::ConnTypePacket(name);
                        }
                        Dispatch::Close(kind) => {
                            self.close(kind.into());
                            return Outcome::Nothing;
                        }
                    }
                }
                ConnType::NotSet | ConnType::Classic => {}
            }
        }
        let Some(entry) = self.registry.registry().by_id(packet_id) else {
            return Outcome::Ignored(IgnoreCause::UnknownId);
        };
        if let Err(v) = self.check_rules(&entry.rules, false) {
            return match entry.rules.on_invalid {
                InvalidAction::Ignore if self.is_keepalive(packet_id) => Outcome::Nothing,
                InvalidAction::Ignore => Outcome::Ignored(IgnoreCause::Rules {
                    packet: entry.name,
                    violation: v,
                }),
                InvalidAction::Close => {
                    self.close(CloseReason::SmartPacketInvalid);
                    Outcome::Nothing
                }
            };
        }
        if packet_id < FIRST_AUTO_ID {
            let id = entry.id;
            return role.handle(self, id, body, now);
        }
        Outcome::Packet(Some(entry.name))
    }
}
