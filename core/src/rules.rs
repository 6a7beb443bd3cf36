//! SmartPacket rules: where, when and how securely a packet type may travel
//! (`docs/PROTOCOL.md`, "SmartPacket rules"; the seed document of the packet
//! classes gives each rule's meaning).
//!
//! Rules are `const` values, checked when a packet is received and *before* it
//! is sent: a send that breaks them never reaches the wire.
//!
//! ```
//! use peng3dnet_core::rules::{InvalidAction, Rules};
//! use peng3dnet_core::{Mode, SecurityLevel, Side};
//!
//! // Received only by the server, only in chat mode, sent only over a verified TLS
//! // connection; anything else closes the connection with `smartpacketinvalid`.
//! const CHAT: Rules = Rules::SMART
//!     .side(Side::Server)
//!     .mode(Mode::CHAT)
//!     .min_security(SecurityLevel::ServerAuth)
//!     .on_invalid(InvalidAction::Close);
//! assert_eq!(Rules::SMART.state, Some(peng3dnet_core::State::Active));
//! assert!(Rules::NONE.state.is_none());
//! # let _ = CHAT;
//! ```

use crate::types::{Mode, SecurityLevel, Side, State};
use core::fmt;

/// What happens to a packet that breaks its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InvalidAction {
    /// Drop it (on receive) or refuse it (on send); the connection goes on.
    Ignore,
    /// Close the connection with `smartpacketinvalid`.
    Close,
}

/// The SmartPacket rules of one packet type. [`Rules::NONE`] is a plain packet
/// (no checks); [`Rules::SMART`] is the reference's SmartPacket default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rules {
    /// The exact connection state required on send and receive (`None`: any).
    pub state: Option<State>,
    /// The side that may *receive* it; the other side may only send it
    /// (`None`: both).
    pub side: Option<Side>,
    /// The exact application mode required (`None`: any).
    pub mode: Option<Mode>,
    /// The connection type required (`None`: any).
    pub conntype: Option<&'static str>,
    /// The lowest security level it may be sent over. Checked on send only.
    pub min_security: SecurityLevel,
    /// What to do when a rule is broken.
    pub on_invalid: InvalidAction,
}

impl Rules {
    /// A plain packet: no rule at all.
    pub const NONE: Rules = Rules {
        state: None,
        side: None,
        mode: None,
        conntype: None,
        min_security: SecurityLevel::None,
        on_invalid: InvalidAction::Ignore,
    };

    /// The SmartPacket defaults: state ACTIVE, nothing else, ignore when broken.
    pub const SMART: Rules = Rules {
        state: Some(State::Active),
        ..Rules::NONE
    };

    /// With the required state.
    pub const fn state(mut self, state: State) -> Rules {
        self.state = Some(state);
        self
    }

    /// With any state allowed.
    pub const fn any_state(mut self) -> Rules {
        self.state = None;
        self
    }

    /// With the side that may receive it.
    pub const fn side(mut self, side: Side) -> Rules {
        self.side = Some(side);
        self
    }

    /// With the required mode.
    pub const fn mode(mut self, mode: Mode) -> Rules {
        self.mode = Some(mode);
        self
    }

    /// With the required connection type.
    pub const fn conntype(mut self, conntype: &'static str) -> Rules {
        self.conntype = Some(conntype);
        self
    }

    /// With the lowest security level for sending.
    pub const fn min_security(mut self, level: SecurityLevel) -> Rules {
        self.min_security = level;
        self
    }

    /// With the action taken when a rule is broken.
    pub const fn on_invalid(mut self, action: InvalidAction) -> Rules {
        self.on_invalid = action;
        self
    }

    /// Checks a packet that arrived on a connection in `ctx`. A
    /// [`Connection`](crate::connection::Connection) checks every packet
    /// itself; this is for code that checks without one
    /// ([`raw`](crate::raw)).
    #[inline]
    pub fn check_receive(&self, ctx: &RuleContext<'_>) -> Result<(), Violation> {
        if let Some(side) = self.side {
            if side != ctx.side {
                return Err(Violation::Side { receiver: side });
            }
        }
        self.check_common(ctx)
    }

    /// Checks a packet about to be sent on a connection in `ctx` (see
    /// [`check_receive`](Self::check_receive)).
    #[inline]
    pub fn check_send(&self, ctx: &RuleContext<'_>) -> Result<(), Violation> {
        if let Some(side) = self.side {
            if side == ctx.side {
                return Err(Violation::Side { receiver: side });
            }
        }
        if ctx.security < self.min_security {
            return Err(Violation::Security {
                required: self.min_security,
                actual: ctx.security,
            });
        }
        self.check_common(ctx)
    }

    #[inline]
    fn check_common(&self, ctx: &RuleContext<'_>) -> Result<(), Violation> {
        if let Some(state) = self.state {
            if state != ctx.state {
                return Err(Violation::State {
                    required: state,
                    actual: ctx.state,
                });
            }
        }
        if let Some(mode) = self.mode {
            if mode != ctx.mode {
                return Err(Violation::Mode {
                    required: mode,
                    actual: ctx.mode,
                });
            }
        }
        if let Some(conntype) = self.conntype {
            if conntype != ctx.conntype {
                return Err(Violation::ConnType);
            }
        }
        Ok(())
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::SMART
    }
}

/// What the rules are checked against: one endpoint of one connection.
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct RuleContext<'a> {
    /// The side of this endpoint.
    pub side: Side,
    /// The connection's state.
    pub state: State,
    /// The connection's mode.
    pub mode: Mode,
    /// The connection's type.
    pub conntype: &'a str,
    /// The security level of the transport.
    pub security: SecurityLevel,
}

/// The rule a packet broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Violation {
    /// The connection was in another state.
    State {
        /// The state the rule requires.
        required: State,
        /// The connection's state.
        actual: State,
    },
    /// The packet travels the other way: only `receiver` may receive it.
    Side {
        /// The side that may receive it.
        receiver: Side,
    },
    /// The connection was in another mode.
    Mode {
        /// The mode the rule requires.
        required: Mode,
        /// The connection's mode.
        actual: Mode,
    },
    /// The connection is of another type.
    ConnType,
    /// The transport is less secure than the rule requires (send only).
    Security {
        /// The level the rule requires.
        required: SecurityLevel,
        /// The connection's level.
        actual: SecurityLevel,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::State { required, actual } => {
                write!(f, "requires state {required}, connection is {actual}")
            }
            Violation::Side { receiver } => write!(f, "may only be received by the {receiver}"),
            Violation::Mode { required, actual } => {
                write!(f, "requires mode {required}, connection is in {actual}")
            }
            Violation::ConnType => f.write_str("requires another connection type"),
            Violation::Security { required, actual } => {
                write!(f, "requires security {required}, connection has {actual}")
            }
        }
    }
}

impl core::error::Error for Violation {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(side: Side) -> RuleContext<'static> {
        RuleContext {
            side,
            state: State::Active,
            mode: Mode::NOTSET,
            conntype: "classic",
            security: SecurityLevel::None,
        }
    }

    #[test]
    fn side_is_where_it_is_received() {
        let r = Rules::SMART.side(Side::Server);
        assert_eq!(r.check_receive(&ctx(Side::Server)), Ok(()));
        assert!(r.check_receive(&ctx(Side::Client)).is_err());
        assert_eq!(r.check_send(&ctx(Side::Client)), Ok(()));
        assert!(r.check_send(&ctx(Side::Server)).is_err());
    }

    #[test]
    fn security_is_checked_on_send_only() {
        let r = Rules::SMART.min_security(SecurityLevel::Encrypted);
        assert_eq!(r.check_receive(&ctx(Side::Client)), Ok(()));
        assert_eq!(
            r.check_send(&ctx(Side::Client)),
            Err(Violation::Security {
                required: SecurityLevel::Encrypted,
                actual: SecurityLevel::None
            })
        );
        let mut c = ctx(Side::Client);
        c.security = SecurityLevel::BothAuth;
        assert_eq!(r.check_send(&c), Ok(()));
    }

    #[test]
    fn state_mode_and_conntype_match_exactly() {
        let mut c = ctx(Side::Client);
        c.state = State::LoggedIn;
        assert!(Rules::SMART.check_receive(&c).is_err());
        assert!(Rules::NONE.check_receive(&c).is_ok());
        let r = Rules::NONE.mode(Mode::PLAY).conntype("chat");
        c.mode = Mode::PLAY;
        assert_eq!(r.check_receive(&c), Err(Violation::ConnType));
        c.conntype = "chat";
        assert_eq!(r.check_receive(&c), Ok(()));
        c.mode = Mode::CHAT;
        assert!(matches!(r.check_send(&c), Err(Violation::Mode { .. })));
    }

    #[test]
    fn violations_name_states_modes_and_levels() {
        extern crate std;
        use std::string::ToString;
        let mode = Violation::Mode {
            required: Mode::PLAY,
            actual: Mode::NOTSET,
        };
        assert_eq!(
            mode.to_string(),
            "requires mode PLAY (3), connection is in NOTSET (0)"
        );
        let own = Violation::Mode {
            required: Mode(70),
            actual: Mode::CHAT,
        };
        assert_eq!(
            own.to_string(),
            "requires mode 70, connection is in CHAT (4)"
        );
        let state = Violation::State {
            required: State::LoggedIn,
            actual: State::Active,
        };
        assert_eq!(
            state.to_string(),
            "requires state LOGGEDIN, connection is ACTIVE"
        );
        let security = Violation::Security {
            required: SecurityLevel::ServerAuth,
            actual: SecurityLevel::Encrypted,
        };
        assert_eq!(
            security.to_string(),
            "requires security SERVERAUTH (server certificate verified), \
             connection has ENCRYPTED (TLS, no certificate verified)"
        );
    }
}
