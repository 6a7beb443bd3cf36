//! The server's table of client connections: fixed capacity, client ids, a
//! refusal with a reason when full, and broadcast.
//!
//! ```
//! use peng3dnet_core::table::{ClientTable, Full};
//!
//! let mut table = ClientTable::<&str, 2>::new();
//! let a = table.try_insert("alice").unwrap();
//! let b = table.try_insert("bob").unwrap();
//! assert_eq!(table.try_insert("carol"), Err(Full("carol")));
//! assert_eq!(table.remove(a), Some("alice"));
//! // A freed slot is reused under a new id: the old id stays dead.
//! let c = table.try_insert("carol").unwrap();
//! assert_ne!(a, c);
//! assert!(table.get(a).is_none());
//! assert_eq!(table.get(b), Some(&"bob"));
//! ```

use crate::buffer::Buffer;
use crate::codec::Codec;
use crate::connection::{Connection, SendError};
use crate::messages::CloseConn;
use crate::registry::{internal, Packet, RegistryAccess};
use crate::types::CloseReason;
use crate::wire::{encode_frame, BufferTooSmall, Flags, FRAME_OVERHEAD};
use core::fmt;

/// The id of a client in a [`ClientTable`]: a slot and the generation of its
/// use, so an id is never reused while the table lives (until 65,536 reuses of
/// one slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientId {
    slot: u16,
    generation: u16,
}

impl ClientId {
    /// The id as one number (generation in the high half, slot in the low).
    pub const fn as_u32(self) -> u32 {
        (self.generation as u32) << 16 | self.slot as u32
    }

    /// The slot index in the table.
    pub const fn slot(self) -> usize {
        self.slot as usize
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

/// The table is full; the value is handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client table is full")
    }
}

impl<T: fmt::Debug> core::error::Error for Full<T> {}

struct Slot<T> {
    generation: u16,
    value: Option<T>,
}

/// At most `N` values (usually connections) under [`ClientId`]s.
pub struct ClientTable<T, const N: usize> {
    slots: [Slot<T>; N],
    len: usize,
}

impl<T, const N: usize> Default for ClientTable<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> ClientTable<T, N> {
    const FITS: () = assert!(N <= u16::MAX as usize, "at most 65535 slots");

    /// An empty table.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        ClientTable {
            slots: core::array::from_fn(|_| Slot {
                generation: 0,
                value: None,
            }),
            len: 0,
        }
    }

    /// How many values it can hold.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds `N` values.
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Puts `value` into a free slot, or hands it back if there is none.
    pub fn try_insert(&mut self, value: T) -> Result<ClientId, Full<T>> {
        let Some(slot) = self.slots.iter().position(|s| s.value.is_none()) else {
            return Err(Full(value));
        };
        let s = &mut self.slots[slot];
        s.value = Some(value);
        self.len += 1;
        Ok(ClientId {
            slot: slot as u16,
            generation: s.generation,
        })
    }

    fn slot(&self, id: ClientId) -> Option<&Slot<T>> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// The value of a live id.
    pub fn get(&self, id: ClientId) -> Option<&T> {
        self.slot(id).and_then(|s| s.value.as_ref())
    }

    /// The value of a live id, mutably.
    pub fn get_mut(&mut self, id: ClientId) -> Option<&mut T> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_mut())
    }

    /// Takes the value out; its id is dead from now on.
    pub fn remove(&mut self, id: ClientId) -> Option<T> {
        let s = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)?;
        let value = s.value.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.len -= 1;
        Some(value)
    }

    /// Every live id with its value.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|v| {
                (
                    ClientId {
                        slot: i as u16,
                        generation: s.generation,
                    },
                    v,
                )
            })
        })
    }

    /// Every live id with its value, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ClientId, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let generation = s.generation;
            s.value.as_mut().map(|v| {
                (
                    ClientId {
                        slot: i as u16,
                        generation,
                    },
                    v,
                )
            })
        })
    }
}

/// What a broadcast did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Clients the packet was queued for.
    pub sent: usize,
    /// Connected clients skipped because they were in the exception list.
    pub excepted: usize,
    /// Connected clients that refused it (rules, connection type, full queue).
    pub failed: usize,
    /// The error of the first failure.
    pub first_error: Option<SendError>,
}

impl<'a, C, R, T, const M: usize, G, const N: usize> ClientTable<Connection<'a, C, R, T, M, G>, N>
where
    C: Codec,
    R: Buffer,
    T: Buffer,
    G: RegistryAccess<M>,
{
    /// Sends `msg` as a `P` to every connected client not in `except`,
    /// encoding it once into `scratch` with the codec of the first connected
    /// client. Each client's rules are checked on its own.
    pub fn broadcast<P: Packet>(
        &mut self,
        msg: &P::Message<'_>,
        scratch: &mut [u8],
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        let Some((_, first)) = self.iter().find(|(_, c)| c.is_connected()) else {
            return Ok(BroadcastReport::default());
        };
        let packet_id = first
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        let n = first
            .codec()
            .encode(msg, scratch)
            .map_err(SendError::Encode)?;
        Ok(self.broadcast_encoded(packet_id, &scratch[..n], except))
    }

    /// Sends an encoded body as packet `packet_id` to every connected client
    /// not in `except`.
    pub fn broadcast_encoded(
        &mut self,
        packet_id: u32,
        body: &[u8],
        except: &[ClientId],
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for (id, conn) in self.iter_mut() {
            if !conn.is_connected() {
                continue;
            }
            if except.contains(&id) {
                report.excepted += 1;
                continue;
            }
            match conn.send_encoded(packet_id, body) {
                Ok(()) => report.sent += 1,
                Err(e) => {
                    report.failed += 1;
                    report.first_error.get_or_insert(e);
                }
            }
        }
        report
    }
}

/// Encodes a lone `closeconn` frame with `reason`, for a transport that must
/// refuse a client without a connection (the table is full: use
/// [`CloseReason::ServerFull`]). Returns the frame's length.
pub fn encode_refusal<C: Codec>(
    codec: &C,
    reason: &CloseReason,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let msg = CloseConn {
        reason: reason.as_wire(),
    };
    let mut body = [0u8; 96];
    let n = codec.encode(&msg, &mut body).map_err(|_| BufferTooSmall {
        required: FRAME_OVERHEAD + body.len(),
    })?;
    encode_frame(out, internal::CLOSECONN, Flags::EMPTY, &body[..n])
}
