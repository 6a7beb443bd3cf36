//! Connection types: the hooks of a custom one ([`ConnTypeHooks`],
//! [`CustomConnType`], [`Dispatch`], [`CloseKind`]) and which type a
//! connection has agreed on (`docs/PROTOCOL.md`, "Constants" and "Connection type `ping`").

use super::config::Config;
use crate::types::{CloseReason, Side, State, CONNTYPE_CLASSIC, CONNTYPE_NOTSET, CONNTYPE_PING};
use core::fmt;

/// What a custom connection type does with an application packet it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Check its rules and report it as [`Event::Packet`](super::Event::Packet), as `classic` does.
    Registry,
    /// Report it as [`Event::ConnTypePacket`](super::Event::ConnTypePacket), without registry or rules.
    Consume,
    /// Close the connection with this reason's wire name... see
    /// [`CloseReason`]; the peer is told.
    Close(CloseKind),
}

/// A close reason a hook may choose (a `Copy` subset of [`CloseReason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// `smartpacketinvalid`.
    SmartPacketInvalid,
    /// `invalidpingpacket`-like refusal of a packet the type does not carry:
    /// reported as `malformedpacket`.
    MalformedPacket,
    /// `userrequest`.
    UserRequest,
}

impl From<CloseKind> for CloseReason {
    fn from(k: CloseKind) -> CloseReason {
        match k {
            CloseKind::SmartPacketInvalid => CloseReason::SmartPacketInvalid,
            CloseKind::MalformedPacket => CloseReason::MalformedPacket,
            CloseKind::UserRequest => CloseReason::UserRequest,
        }
    }
}

/// The hooks of a custom connection type (the reference's `ConnectionType`).
/// Each returns a decision; the connection carries it out. Every method has a
/// default that behaves like a connection without a handshake.
pub trait ConnTypeHooks {
    /// Called on both sides once the type is agreed (client: after it sent
    /// `settype`; server: when it received it). Returns the state the
    /// connection enters; [`State::Active`] or [`State::LoggedIn`] makes it
    /// connected ([`Event::Connected`](super::Event::Connected)).
    fn init(&self, side: Side) -> State {
        let _ = side;
        State::Active
    }

    /// Called for every received packet with an id of 64 or above.
    fn receive(&self, side: Side, packet_id: u32) -> Dispatch {
        let _ = (side, packet_id);
        Dispatch::Registry
    }

    /// Called before an application packet (id 64 or above) is sent; `false`
    /// refuses it with [`SendError::ConnTypeRefused`](super::SendError::ConnTypeRefused).
    fn allow_send(&self, side: Side, packet_id: u32) -> bool {
        let _ = (side, packet_id);
        true
    }
}

/// A named custom connection type in [`Config::conntypes`].
#[derive(Clone, Copy)]
pub struct CustomConnType<'a> {
    /// The name sent in `settype`.
    pub name: &'static str,
    /// Its hooks.
    pub hooks: &'a (dyn ConnTypeHooks + Sync),
}

impl fmt::Debug for CustomConnType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomConnType")
            .field("name", &self.name)
            .finish()
    }
}

/// A connection's type, by what the state machine does with it: `_notset`
/// before `settype`, the built-in `classic` and `ping`, or the custom type at
/// this index of [`Config::conntypes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConnType {
    /// `_notset`: no type agreed yet.
    NotSet,
    /// `classic`: registry handshake, then application packets.
    Classic,
    /// `ping`: one request, one answer, no registry.
    Ping,
    /// A custom type, by its index in [`Config::conntypes`].
    Custom(u16),
}

impl ConnType {
    /// The type called `name` in `settype`, if this side has it. A server
    /// without [`Config::ping`] has no `ping`.
    #[inline]
    pub(super) fn find(name: &str, side: Side, config: &Config<'_>) -> Option<ConnType> {
        match name {
            CONNTYPE_CLASSIC => Some(ConnType::Classic),
            CONNTYPE_PING if side == Side::Client || config.ping.is_some() => Some(ConnType::Ping),
            _ => config
                .conntypes
                .iter()
                .position(|t| t.name == name)
                .map(|i| ConnType::Custom(i as u16)),
        }
    }

    /// Its name, as `settype` carries it and rules compare it.
    pub(super) fn name<'a>(self, config: &Config<'a>) -> &'a str {
        match self {
            ConnType::NotSet => CONNTYPE_NOTSET,
            ConnType::Classic => CONNTYPE_CLASSIC,
            ConnType::Ping => CONNTYPE_PING,
            // Cannot panic: the index was found in this same table.
            ConnType::Custom(i) => config.conntypes[i as usize].name,
        }
    }

    /// The hooks of a custom type; `None` for the built-in ones.
    // Out of line: three callers, custom types only (firmware flash).
    #[inline(never)]
    pub(super) fn hooks<'a>(self, config: &Config<'a>) -> Option<&'a (dyn ConnTypeHooks + Sync)> {
        match self {
            // Cannot panic: the index was found in this same table.
            ConnType::Custom(i) => Some(config.conntypes[i as usize].hooks),
            _ => None,
        }
    }
}
