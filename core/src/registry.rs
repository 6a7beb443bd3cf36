//! The packet registry: names <-> ids <-> rules, with a capacity fixed at
//! compile time (`docs/PROTOCOL.md`, "Packet registry").
//!
//! Ids below 64 belong to the protocol; ids given automatically start at 64 and
//! count up in registration order, skipping ids already taken. Names starting
//! with `peng3dnet:` are reserved. Every registry starts with the five internal
//! packets, so `N` counts them too (an `N` below 5 does not compile).
//!
//! ```
//! use peng3dnet_core::registry::{Packet, Registry, RegistryError};
//! use peng3dnet_core::rules::Rules;
//!
//! struct Chat;
//! impl Packet for Chat {
//!     const NAME: &'static str = "demo:chat.message";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let mut reg = Registry::<8>::new();
//! assert_eq!(reg.register::<Chat>(), Ok(64));
//! assert_eq!(reg.register::<Chat>(), Err(RegistryError::DuplicateName("demo:chat.message")));
//! assert_eq!(reg.register_raw("demo:raw", Some(7), Rules::NONE), Err(RegistryError::ReservedId(7)));
//! assert_eq!(reg.by_id(64).unwrap().name, "demo:chat.message");
//! ```

use crate::rules::{InvalidAction, Rules};
use crate::text::{WireStr, WireU32};
use crate::types::{Side, State, CONNTYPE_NOTSET};
use core::fmt;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// The first id given automatically; ids below it are the protocol's.
pub const FIRST_AUTO_ID: u32 = 64;
/// The prefix of names reserved for the protocol.
pub const RESERVED_PREFIX: &str = "peng3dnet:";

/// A packet type known at compile time: its name, optional fixed id, rules and
/// message type. Sending and decoding through it are type-checked.
pub trait Packet {
    /// The registry name, `namespace:category.name`.
    const NAME: &'static str;
    /// A fixed id (64 or above for application packets), or `None` for an
    /// automatic one.
    const ID: Option<u32> = None;
    /// The SmartPacket rules; [`Rules::NONE`] makes a plain packet.
    const RULES: Rules = Rules::NONE;
    /// The message the body carries. It may borrow from the received frame.
    type Message<'a>: Serialize + Deserialize<'a>;
}

/// One registered packet type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: &'static str,
    /// Its id on this connection (the server's id after a registry sync).
    pub id: u32,
    /// Its rules.
    pub rules: Rules,
    hash: u32,
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegistryError {
    /// The table holds its `capacity` (`N`) entries already; the protocol's
    /// own packets take [`INTERNAL_COUNT`] of them.
    Full {
        /// The registry's capacity, `N`.
        capacity: usize,
    },
    /// This name is registered already.
    DuplicateName(&'static str),
    /// The id is registered already.
    DuplicateId(u32),
    /// A fixed id below 64 for a packet that is not the protocol's own.
    ReservedId(u32),
    /// A name starting with `peng3dnet:` for a packet that is not the
    /// protocol's own.
    ReservedName,
    /// An empty name.
    EmptyName,
    /// No free id is left for an automatic id.
    IdsExhausted,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Full { capacity } => write!(
                f,
                "registry is full: {capacity} entries, {INTERNAL_COUNT} of them the protocol's own"
            ),
            RegistryError::DuplicateName(name) => write!(f, "packet {name} is registered already"),
            RegistryError::DuplicateId(id) => write!(f, "id {id} already registered"),
            RegistryError::ReservedId(id) => write!(f, "id {id} is reserved for the protocol"),
            RegistryError::ReservedName => {
                write!(f, "names starting with {RESERVED_PREFIX:?} are reserved")
            }
            RegistryError::EmptyName => f.write_str("empty packet name"),
            RegistryError::IdsExhausted => f.write_str("no automatic id left"),
        }
    }
}

impl core::error::Error for RegistryError {}

/// FNV-1a, to compare names by a word before comparing their bytes.
const fn name_hash(bytes: &[u8]) -> u32 {
    let mut hash = 0x811c_9dc5u32;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Ids and names of the internal packets (`docs/PROTOCOL.md`, table of
/// internal packets).
pub mod internal {
    /// `peng3dnet:internal.hello`, server to client.
    pub const HELLO: u32 = 1;
    /// `peng3dnet:internal.settype`, client to server.
    pub const SETTYPE: u32 = 2;
    /// `peng3dnet:internal.handshake`, server to client.
    pub const HANDSHAKE: u32 = 3;
    /// `peng3dnet:internal.handshake.accept`, client to server.
    pub const HANDSHAKE_ACCEPT: u32 = 4;
    /// `peng3dnet:internal.closeconn`, either way, in any state.
    pub const CLOSECONN: u32 = 16;
    /// The raw id of a ping request on a `ping` connection.
    pub const PING_REQUEST: u32 = 64;
    /// The raw id of a ping answer on a `ping` connection.
    pub const PING_RESPONSE: u32 = 65;
}

/// The internal packets every registry starts with, with the rules the
/// reference gives them.
static INTERNAL: [(&str, u32, Rules); 5] = [
    (
        "peng3dnet:internal.hello",
        internal::HELLO,
        Rules::SMART
            .state(State::HelloWait)
            .side(Side::Client)
            .conntype(CONNTYPE_NOTSET),
    ),
    (
        "peng3dnet:internal.settype",
        internal::SETTYPE,
        Rules::SMART.state(State::WaitType).side(Side::Server),
    ),
    (
        "peng3dnet:internal.handshake",
        internal::HANDSHAKE,
        Rules::SMART
            .state(State::HandshakeWait1)
            .side(Side::Client)
            .on_invalid(InvalidAction::Close),
    ),
    (
        "peng3dnet:internal.handshake.accept",
        internal::HANDSHAKE_ACCEPT,
        Rules::SMART
            .state(State::HandshakeWait1)
            .side(Side::Server)
            .on_invalid(InvalidAction::Close),
    ),
    (
        "peng3dnet:internal.closeconn",
        internal::CLOSECONN,
        Rules::NONE,
    ),
];

/// The number of internal packets, the smallest useful `N`.
pub const INTERNAL_COUNT: usize = INTERNAL.len();

/// A packet registry of at most `N` entries, the internal ones included.
#[derive(Clone, Debug)]
pub struct Registry<const N: usize> {
    /// In registration order.
    entries: heapless::Vec<Entry, N>,
    /// `(id, index into entries)`, sorted by id: the hot path is a binary search.
    by_id: heapless::Vec<(u32, u16), N>,
    next_auto: u32,
}

impl<const N: usize> Default for Registry<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Registry<N> {
    const ROOM_FOR_INTERNAL: () = assert!(
        N >= INTERNAL_COUNT && N <= u16::MAX as usize,
        "a registry needs room for the 5 internal packets and at most 65535 entries"
    );

    /// A registry holding the internal packets.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::ROOM_FOR_INTERNAL;
        let mut reg = Registry {
            entries: heapless::Vec::new(),
            by_id: heapless::Vec::new(),
            next_auto: FIRST_AUTO_ID,
        };
        for (name, id, rules) in &INTERNAL {
            // Cannot fail: N >= 5 is asserted at compile time and the
            // internal names and ids are distinct.
            let _ = reg.insert(name, *id, rules);
        }
        reg
    }

    /// Registers the typed packet `P` and returns its id.
    pub fn register<P: Packet>(&mut self) -> Result<u32, RegistryError> {
        self.register_raw(P::NAME, P::ID, P::RULES)
    }

    /// Registers a packet by name, with a fixed id or an automatic one.
    pub fn register_raw(
        &mut self,
        name: &'static str,
        id: Option<u32>,
        rules: Rules,
    ) -> Result<u32, RegistryError> {
        if name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(RegistryError::ReservedName);
        }
        if self.entries.is_full() {
            return Err(RegistryError::Full { capacity: N });
        }
        let hash = name_hash(name.as_bytes());
        if self.find_name(name.as_bytes(), hash).is_some() {
            return Err(RegistryError::DuplicateName(name));
        }
        let id = match id {
            Some(id) if id < FIRST_AUTO_ID => return Err(RegistryError::ReservedId(id)),
            Some(id) => id,
            None => {
                let mut id = self.next_auto;
                while self.index_of_id(id).is_some() {
                    id = id.checked_add(1).ok_or(RegistryError::IdsExhausted)?;
                }
                self.next_auto = id.saturating_add(1);
                id
            }
        };
        self.insert(name, id, &rules)
    }

    /// `rules` by reference: `new` passes the internal packets' from a
    /// static table (a `Rules` by value was copied to the stack at each of
    /// its unrolled calls: flash).
    fn insert(&mut self, name: &'static str, id: u32, rules: &Rules) -> Result<u32, RegistryError> {
        if self.entries.is_full() {
            return Err(RegistryError::Full { capacity: N });
        }
        let index = self.entries.len() as u16;
        if !insert_sorted(&mut self.by_id, id, index) {
            return Err(RegistryError::DuplicateId(id));
        }
        let entry = Entry {
            name,
            id,
            rules: *rules,
            hash: name_hash(name.as_bytes()),
        };
        // Cannot fail: checked above (and by_id has as many slots).
        let _ = self.entries.push(entry);
        Ok(id)
    }

    // Out of line on bare metal, where its inlined copies (sends, polls,
    // registrations) cost flash; inlined on a host, the hot path.
    #[cfg_attr(target_os = "none", inline(never))]
    #[cfg_attr(not(target_os = "none"), inline)]
    fn index_of_id(&self, id: u32) -> Option<usize> {
        // Automatic ids are dense from 64 and sort after the internal ones:
        // id 64 + k is usually at position INTERNAL_COUNT + k.
        let guess = (id.wrapping_sub(FIRST_AUTO_ID) as usize).wrapping_add(INTERNAL_COUNT);
        if let Some(&(i, index)) = self.by_id.get(guess) {
            if i == id {
                return Some(index as usize);
            }
        }
        self.by_id
            .binary_search_by_key(&id, |&(i, _)| i)
            .ok()
            .map(|pos| self.by_id[pos].1 as usize)
    }

    fn find_name(&self, name: &[u8], hash: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.hash == hash && e.name.as_bytes() == name)
    }

    /// The entry with this id.
    #[inline]
    pub fn by_id(&self, id: u32) -> Option<&Entry> {
        self.index_of_id(id).map(|i| &self.entries[i])
    }

    /// The entry with this name.
    pub fn by_name(&self, name: &str) -> Option<&Entry> {
        self.find_name(name.as_bytes(), name_hash(name.as_bytes()))
            .map(|i| &self.entries[i])
    }

    /// The id of the typed packet `P`, if registered.
    pub fn id_of<P: Packet>(&self) -> Option<u32> {
        self.by_name(P::NAME).map(|e| e.id)
    }

    /// Every entry, in registration order (the internal ones first).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries, the internal ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: the internal packets are always there.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The whole registry as a map `name -> id`, as the server sends it in
    /// its handshake (the `registry` of a
    /// [`raw::HandshakeOut`](crate::raw::HandshakeOut)). A
    /// [`Connection`](crate::connection::Connection) sends it itself.
    pub fn as_map(&self) -> RegistryMap<'_, N> {
        RegistryMap(self)
    }

    /// A seed that decodes a peer's `name -> id` map and compares it with this
    /// registry, without storing the peer's names (the `registry` of a
    /// server's handshake, which [`raw::HandshakeSeed`](crate::raw::HandshakeSeed)
    /// decodes with it). A [`Connection`](crate::connection::Connection)
    /// does this itself.
    pub fn sync_seed(&self) -> SyncSeed<'_, N> {
        SyncSeed::new(self)
    }

    /// Checks the server's map found by [`sync_seed`](Self::sync_seed)
    /// under `policy`, changing nothing: the map names no packet twice, under
    /// [`SyncPolicy::CloseConnection`] it holds exactly our names, and it
    /// gives the internal packets their fixed ids.
    /// [`apply_sync`](Self::apply_sync) starts with this check, then also
    /// refuses ids that would clash once adopted.
    pub fn check_sync(&self, sync: &SyncReport<N>, policy: SyncPolicy) -> Result<(), SyncError> {
        self.check_sync_keeping(sync, policy, INTERNAL_COUNT)
    }

    /// [`check_sync`](Self::check_sync) for a registry that cannot adopt ids
    /// (one shared by many connections): every name the map shares with this
    /// registry must have its id here already.
    pub fn check_sync_unchanged(
        &self,
        sync: &SyncReport<N>,
        policy: SyncPolicy,
    ) -> Result<(), SyncError> {
        self.check_sync_keeping(sync, policy, self.entries.len())
    }

    /// The sync rule, with the first `keep` entries required to keep their
    /// ids (the internal packets come first in every registry).
    #[inline]
    fn check_sync_keeping(
        &self,
        sync: &SyncReport<N>,
        policy: SyncPolicy,
        keep: usize,
    ) -> Result<(), SyncError> {
        if sync.duplicate_names {
            return Err(SyncError::Malformed);
        }
        if policy == SyncPolicy::CloseConnection && !sync.same_names() {
            return Err(SyncError::Mismatch);
        }
        let kept = self.entries[..keep]
            .iter()
            .zip(sync.remote_ids.iter())
            .all(|(e, remote)| remote.is_none_or(|id| id == e.id));
        if !kept {
            return Err(SyncError::Mismatch);
        }
        Ok(())
    }

    /// How the server's map found by [`sync_seed`](Self::sync_seed) differs
    /// from this registry: what a client reports when
    /// [`check_sync`](Self::check_sync), [`check_sync_unchanged`](Self::check_sync_unchanged)
    /// (`adopts_ids` false) or [`apply_sync`](Self::apply_sync) refused it.
    /// (Feature `mismatch-report`.)
    #[cfg(feature = "mismatch-report")]
    pub fn mismatch(&self, sync: &SyncReport<N>, adopts_ids: bool) -> RegistryMismatch {
        self.expand_mismatch(&self.mismatch_record(sync, adopts_ids))
    }

    /// [`mismatch`](Self::mismatch) in the compact form a connection keeps.
    #[cfg(feature = "mismatch-report")]
    pub(crate) fn mismatch_record(&self, sync: &SyncReport<N>, adopts_ids: bool) -> MismatchRecord {
        let keep = if adopts_ids {
            INTERNAL_COUNT
        } else {
            self.entries.len()
        };
        let mut rec = MismatchRecord {
            peer_lacks: NO_ENTRY,
            peer_lacks_count: 0,
            we_lack_count: u16::try_from(sync.unknown).unwrap_or(u16::MAX),
            id_differs: NO_ENTRY,
            theirs: 0,
            duplicate_names: sync.duplicate_names,
            we_lack: heapless::String::new(),
        };
        // Cannot fail: first_unknown has as many bytes of room.
        let _ = rec.we_lack.push_str(&sync.first_unknown);
        for (i, (e, remote)) in self.entries.iter().zip(sync.remote_ids.iter()).enumerate() {
            match remote {
                None => {
                    if rec.peer_lacks == NO_ENTRY {
                        rec.peer_lacks = i as u16;
                    }
                    rec.peer_lacks_count = rec.peer_lacks_count.saturating_add(1);
                }
                Some(theirs) if i < keep && *theirs != e.id && rec.id_differs == NO_ENTRY => {
                    rec.id_differs = i as u16;
                    rec.theirs = *theirs;
                }
                Some(_) => {}
            }
        }
        rec
    }

    /// The [`RegistryMismatch`] a record made by this registry stands for.
    #[cfg(feature = "mismatch-report")]
    pub(crate) fn expand_mismatch(&self, rec: &MismatchRecord) -> RegistryMismatch {
        let name = |i: u16| self.entries.get(usize::from(i)).map(|e| e.name);
        let mut we_lack = heapless::String::new();
        // Cannot fail: as many bytes of room.
        let _ = we_lack.push_str(&rec.we_lack);
        RegistryMismatch {
            peer_lacks: name(rec.peer_lacks),
            peer_lacks_count: rec.peer_lacks_count,
            we_lack: (rec.we_lack_count > 0).then_some(we_lack),
            we_lack_count: rec.we_lack_count,
            id_differs: self
                .entries
                .get(usize::from(rec.id_differs))
                .map(|e| IdMismatch {
                    packet: e.name,
                    ours: e.id,
                    theirs: rec.theirs,
                }),
            duplicate_names: rec.duplicate_names,
        }
    }

    /// Adopts the server's ids that a client's handshake found (the `sync`
    /// of a [`raw::HandshakeIn`](crate::raw::HandshakeIn)) under `policy`. On
    /// error the registry is left unchanged. A
    /// [`Connection`](crate::connection::Connection) does this itself.
    pub fn apply_sync(
        &mut self,
        sync: &SyncReport<N>,
        policy: SyncPolicy,
    ) -> Result<(), SyncError> {
        self.check_sync(sync, policy)?;
        let mut by_id: heapless::Vec<(u32, u16), N> = heapless::Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let id = sync.remote_ids[i].unwrap_or(e.id);
            // A sorted insert rather than a sort afterwards: at most N
            // entries, and no sort routine (5 KB on a Cortex-M) in the image.
            // Room cannot lack: by_id has as many slots as entries.
            if !insert_sorted(&mut by_id, id, i as u16) {
                return Err(SyncError::DuplicateId);
            }
        }
        for &(id, i) in by_id.iter() {
            self.entries[i as usize].id = id;
        }
        self.by_id = by_id;
        Ok(())
    }
}

/// How a connection reaches its registry: shared (`&Registry`, as a server's
/// connections share the server's), exclusive (`&mut Registry`) or owned
/// (`Registry`). A client whose registry it can change adopts the server's
/// ids in the handshake; with a shared one, the ids must already agree.
///
/// A host adapter can implement it for its own handle type (an `Arc` wrapper,
/// a boxed registry) so that a connection borrows nothing.
pub trait RegistryAccess<const N: usize> {
    /// The registry.
    fn registry(&self) -> &Registry<N>;

    /// The registry, if this access may change it.
    fn registry_mut(&mut self) -> Option<&mut Registry<N>> {
        None
    }
}

impl<const N: usize> RegistryAccess<N> for &Registry<N> {
    fn registry(&self) -> &Registry<N> {
        self
    }
}

impl<const N: usize> RegistryAccess<N> for &mut Registry<N> {
    fn registry(&self) -> &Registry<N> {
        self
    }

    fn registry_mut(&mut self) -> Option<&mut Registry<N>> {
        Some(self)
    }
}

impl<const N: usize> RegistryAccess<N> for Registry<N> {
    fn registry(&self) -> &Registry<N> {
        self
    }

    fn registry_mut(&mut self) -> Option<&mut Registry<N>> {
        Some(self)
    }
}

/// What a client does when the server's registry has other names than its own
/// (`net.registry.missingpacketaction` in the reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SyncPolicy {
    /// Close with `packetregmismatch` (the reference's default).
    #[default]
    CloseConnection,
    /// Adopt the ids of the names both know and go on.
    Ignore,
}

/// Why a registry sync failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SyncError {
    /// The sets of names differ and the policy is to close.
    Mismatch,
    /// Adopting the server's ids would give two packets one id.
    DuplicateId,
    /// The server's map names a packet twice.
    Malformed,
}

/// The longest name of a peer's packet a [`RegistryMismatch`] keeps; a
/// longer one is cut at a character boundary.
pub const MAX_MISMATCH_NAME: usize = 32;

/// How a server's registry differs from a client's, found by the client in
/// the handshake when it closes with `packetregmismatch`
/// ([`Connection::registry_mismatch`](crate::connection::Connection::registry_mismatch)):
/// the first differing name of each kind and how many there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryMismatch {
    /// The first of our packets the server's registry lacks.
    pub peer_lacks: Option<&'static str>,
    /// How many of our packets the server's registry lacks.
    pub peer_lacks_count: u16,
    /// The first packet of the server's we lack (cut to
    /// [`MAX_MISMATCH_NAME`] bytes).
    pub we_lack: Option<heapless::String<MAX_MISMATCH_NAME>>,
    /// How many of the server's packets we lack.
    pub we_lack_count: u16,
    /// The first packet both know whose ids differ where they must agree
    /// (an internal packet's; any packet's when our registry is shared and
    /// cannot adopt the server's ids).
    pub id_differs: Option<IdMismatch>,
    /// The server's map named one packet twice.
    pub duplicate_names: bool,
}

#[cfg(feature = "defmt")]
impl defmt::Format for RegistryMismatch {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "RegistryMismatch {{ peer_lacks: {} ({=u16}), we_lack: {} ({=u16}), id_differs: {}, duplicate_names: {=bool} }}",
            self.peer_lacks,
            self.peer_lacks_count,
            self.we_lack.as_deref(),
            self.we_lack_count,
            self.id_differs,
            self.duplicate_names
        )
    }
}

/// No entry (an index into a registry's entries).
#[cfg(feature = "mismatch-report")]
const NO_ENTRY: u16 = u16::MAX;

/// A [`RegistryMismatch`] as a connection keeps it: entry indices instead of
/// names (48 bytes rather than 96 on a 64-bit host).
#[cfg(feature = "mismatch-report")]
#[derive(Clone, Debug)]
pub(crate) struct MismatchRecord {
    peer_lacks: u16,
    peer_lacks_count: u16,
    we_lack_count: u16,
    id_differs: u16,
    theirs: u32,
    duplicate_names: bool,
    we_lack: heapless::String<MAX_MISMATCH_NAME, u8>,
}

/// A packet both registries know under different ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IdMismatch {
    /// Its name.
    pub packet: &'static str,
    /// Our id.
    pub ours: u32,
    /// The server's id.
    pub theirs: u32,
}

/// As in `the server lacks demo:b (and 1 more); we lack demo:c; demo:d has
/// id 65 here, 66 at the server`.
impl fmt::Display for RegistryMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let more = |f: &mut fmt::Formatter<'_>, count: u16| {
            if count > 1 {
                write!(f, " (and {} more)", count - 1)
            } else {
                Ok(())
            }
        };
        if let Some(name) = self.peer_lacks {
            write!(f, "the server lacks {name}")?;
            more(f, self.peer_lacks_count)?;
            sep = "; ";
        }
        if let Some(name) = &self.we_lack {
            write!(f, "{sep}we lack {name}")?;
            more(f, self.we_lack_count)?;
            sep = "; ";
        }
        if let Some(d) = self.id_differs {
            write!(
                f,
                "{sep}{} has id {} here, {} at the server",
                d.packet, d.ours, d.theirs
            )?;
            sep = "; ";
        }
        if self.duplicate_names {
            write!(f, "{sep}the server names a packet twice")?;
            sep = "; ";
        }
        if sep.is_empty() {
            f.write_str("adopting the server's ids would give two packets one id")?;
        }
        Ok(())
    }
}

/// The result of comparing a peer's registry map with ours.
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct SyncReport<const N: usize> {
    /// The peer's id for each of our entries, by our entry index.
    pub remote_ids: [Option<u32>; N],
    /// How many of our entries the peer named.
    pub matched: usize,
    /// How many names the peer sent that we do not know.
    pub unknown: usize,
    /// How many entries we have.
    pub ours: usize,
    /// Whether the peer named one packet twice.
    pub duplicate_names: bool,
    /// The first name the peer sent that we do not know (cut to
    /// [`MAX_MISMATCH_NAME`] bytes; empty if none). Feature
    /// `mismatch-report`: only the mismatch report uses it.
    #[cfg(feature = "mismatch-report")]
    pub first_unknown: heapless::String<MAX_MISMATCH_NAME>,
}

impl<const N: usize> SyncReport<N> {
    /// Whether both registries hold exactly the same names.
    pub fn same_names(&self) -> bool {
        self.unknown == 0 && self.matched == self.ours && !self.duplicate_names
    }
}

/// Serializes a registry as the map `name -> id` ([`Registry::as_map`]).
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
pub struct RegistryMap<'a, const N: usize>(&'a Registry<N>);

impl<const N: usize> Serialize for RegistryMap<'_, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.entries.len()))?;
        for e in self.0.entries.iter() {
            map.serialize_entry(&crate::messages::Text(e.name), &e.id)?;
        }
        map.end()
    }
}

/// Decodes a `name -> id` map against a registry; see
/// [`Registry::sync_seed`].
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
pub struct SyncSeed<'a, const N: usize>(&'a Registry<N>);

impl<'a, const N: usize> SyncSeed<'a, N> {
    /// A seed comparing against `registry`.
    pub fn new(registry: &'a Registry<N>) -> Self {
        SyncSeed(registry)
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for SyncSeed<'_, N> {
    type Value = SyncReport<N>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for SyncSeed<'_, N> {
    type Value = SyncReport<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of packet names to ids")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut report = SyncReport {
            remote_ids: [None; N],
            matched: 0,
            unknown: 0,
            ours: self.0.len(),
            duplicate_names: false,
            #[cfg(feature = "mismatch-report")]
            first_unknown: heapless::String::new(),
        };
        while let Some((name, WireU32(id))) = map.next_entry::<WireStr<'de>, WireU32>()? {
            match self.0.find_name(name.0, name_hash(name.0)) {
                Some(i) if report.remote_ids[i].is_some() => report.duplicate_names = true,
                Some(i) => {
                    report.remote_ids[i] = Some(id);
                    report.matched += 1;
                }
                None => {
                    #[cfg(feature = "mismatch-report")]
                    if report.unknown == 0 {
                        report.first_unknown = cut_name(name.0);
                    }
                    report.unknown = report.unknown.saturating_add(1);
                }
            }
        }
        Ok(report)
    }
}

/// Inserts `(id, index)` into `by_id`, kept sorted by id; false (nothing
/// inserted) when the id is there already or there is no room. One copy for
/// registration and the registry sync: appended, then moved down past the
/// larger ids (at most `N` entries; smaller code than a binary search and a
/// shifting insert).
fn insert_sorted<const N: usize>(
    by_id: &mut heapless::Vec<(u32, u16), N>,
    id: u32,
    index: u16,
) -> bool {
    if by_id.iter().any(|&(other, _)| other == id) || by_id.push((id, index)).is_err() {
        return false;
    }
    let slots = by_id.as_mut_slice();
    let mut k = slots.len() - 1;
    while k > 0 && slots[k - 1].0 > id {
        slots.swap(k - 1, k);
        k -= 1;
    }
    true
}

/// `name` (valid UTF-8), cut to [`MAX_MISMATCH_NAME`] bytes at a character
/// boundary.
#[cfg(feature = "mismatch-report")]
fn cut_name(name: &[u8]) -> heapless::String<MAX_MISMATCH_NAME> {
    let mut s = heapless::String::new();
    crate::text::push_cut(s.as_mut_view(), name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Postcard};

    #[test]
    fn registration_errors_name_the_packet_and_the_capacity() {
        extern crate std;
        use std::string::ToString;
        let mut reg = Registry::<{ INTERNAL_COUNT + 1 }>::new();
        reg.register_raw("a:one", None, Rules::NONE).unwrap();
        let full = reg.register_raw("a:two", None, Rules::NONE).unwrap_err();
        assert_eq!(
            full.to_string(),
            std::format!(
                "registry is full: {} entries, {INTERNAL_COUNT} of them the protocol's own",
                INTERNAL_COUNT + 1
            )
        );
        let mut reg = Registry::<10>::new();
        reg.register_raw("a:one", None, Rules::NONE).unwrap();
        let dup = reg.register_raw("a:one", None, Rules::NONE).unwrap_err();
        assert_eq!(dup, RegistryError::DuplicateName("a:one"));
        assert_eq!(dup.to_string(), "packet a:one is registered already");
    }

    #[test]
    fn auto_ids_count_up_and_skip_taken_ones() {
        let mut reg = Registry::<10>::new();
        assert_eq!(reg.register_raw("a:a", Some(65), Rules::NONE), Ok(65));
        assert_eq!(reg.register_raw("a:b", None, Rules::NONE), Ok(64));
        assert_eq!(reg.register_raw("a:c", None, Rules::NONE), Ok(66));
        assert_eq!(
            reg.register_raw("a:d", Some(66), Rules::NONE),
            Err(RegistryError::DuplicateId(66))
        );
        assert_eq!(
            reg.register_raw("peng3dnet:x", None, Rules::NONE),
            Err(RegistryError::ReservedName)
        );
        assert_eq!(
            reg.register_raw("", None, Rules::NONE),
            Err(RegistryError::EmptyName)
        );
        assert_eq!(reg.register_raw("a:e", None, Rules::NONE), Ok(67));
        assert_eq!(reg.register_raw("a:f", None, Rules::NONE), Ok(68));
        assert_eq!(
            reg.register_raw("a:g", None, Rules::NONE),
            Err(RegistryError::Full { capacity: 10 })
        );
        assert_eq!(reg.by_id(16).unwrap().name, "peng3dnet:internal.closeconn");
        assert_eq!(reg.by_name("a:c").unwrap().id, 66);
        assert!(reg.by_id(69).is_none());
    }

    fn synced(
        server: &Registry<12>,
        client: &mut Registry<12>,
        policy: SyncPolicy,
    ) -> Result<(), SyncError> {
        let mut buf = [0u8; 512];
        let n = Postcard.encode(&server.as_map(), &mut buf).unwrap();
        let report = Postcard.decode_seed(client.sync_seed(), &buf[..n]).unwrap();
        client.apply_sync(&report, policy)
    }

    /// What a client with `client` learns from a server map `pairs` (names
    /// may repeat: postcard encodes a map like a sequence of pairs).
    fn report(client: &Registry<12>, pairs: &[(&str, u32)]) -> SyncReport<12> {
        let mut buf = [0u8; 512];
        let n = Postcard.encode(pairs, &mut buf).unwrap();
        Postcard.decode_seed(client.sync_seed(), &buf[..n]).unwrap()
    }

    #[test]
    fn check_sync_is_the_rule_apply_sync_and_a_shared_registry_use() {
        use SyncPolicy::{CloseConnection as Close, Ignore};
        let internal: std::vec::Vec<(&str, u32)> =
            INTERNAL.iter().map(|&(name, id, _)| (name, id)).collect();
        let with = |extra: &[(&'static str, u32)]| {
            let mut pairs = internal.clone();
            pairs.extend_from_slice(extra);
            pairs
        };
        let mut client = Registry::<12>::new();
        client.register_raw("x:one", None, Rules::NONE).unwrap(); // 64
        client.register_raw("x:two", None, Rules::NONE).unwrap(); // 65
        let same = with(&[("x:one", 64), ("x:two", 65)]);
        let swapped = with(&[("x:one", 65), ("x:two", 64)]);
        let extra = with(&[("x:one", 64), ("x:two", 65), ("x:new", 66)]);
        let missing = with(&[("x:one", 64)]);
        let twice = with(&[("x:one", 64), ("x:one", 64), ("x:two", 65)]);
        let clash = with(&[("x:one", 65)]);
        let mut moved = with(&[("x:one", 64), ("x:two", 65)]);
        moved[0].1 = 9; // hello on another id
        /// (map, policy, check_sync, whether every id stays, apply_sync)
        type Case<'a> = (
            &'a [(&'a str, u32)],
            SyncPolicy,
            Result<(), SyncError>,
            bool,
            Result<(), SyncError>,
        );
        let cases: [Case<'_>; 10] = [
            (&same, Close, Ok(()), true, Ok(())),
            (&swapped, Close, Ok(()), false, Ok(())),
            (
                &extra,
                Close,
                Err(SyncError::Mismatch),
                true,
                Err(SyncError::Mismatch),
            ),
            (&extra, Ignore, Ok(()), true, Ok(())),
            (
                &missing,
                Close,
                Err(SyncError::Mismatch),
                true,
                Err(SyncError::Mismatch),
            ),
            (&missing, Ignore, Ok(()), true, Ok(())),
            (
                &twice,
                Ignore,
                Err(SyncError::Malformed),
                true,
                Err(SyncError::Malformed),
            ),
            // Only adopting finds two packets on one id.
            (&clash, Ignore, Ok(()), false, Err(SyncError::DuplicateId)),
            (
                &moved,
                Ignore,
                Err(SyncError::Mismatch),
                false,
                Err(SyncError::Mismatch),
            ),
            (
                &moved,
                Close,
                Err(SyncError::Mismatch),
                false,
                Err(SyncError::Mismatch),
            ),
        ];
        for (i, (pairs, policy, check, keeps, apply)) in cases.into_iter().enumerate() {
            let sync = report(&client, pairs);
            assert_eq!(client.check_sync(&sync, policy), check, "case {i}");
            let unchanged = check.and(if keeps {
                Ok(())
            } else {
                Err(SyncError::Mismatch)
            });
            assert_eq!(
                client.check_sync_unchanged(&sync, policy),
                unchanged,
                "case {i}"
            );
            let mut adopting = client.clone();
            assert_eq!(adopting.apply_sync(&sync, policy), apply, "case {i}");
            if apply.is_err() {
                assert_eq!(adopting.entries(), client.entries(), "case {i}");
            }
        }
    }

    #[test]
    fn sync_adopts_server_ids() {
        let mut server = Registry::<12>::new();
        server.register_raw("x:one", None, Rules::NONE).unwrap();
        server.register_raw("x:two", None, Rules::NONE).unwrap();
        let mut client = Registry::<12>::new();
        client.register_raw("x:two", None, Rules::NONE).unwrap();
        client.register_raw("x:one", None, Rules::NONE).unwrap();
        assert_eq!(
            synced(&server, &mut client, SyncPolicy::CloseConnection),
            Ok(())
        );
        assert_eq!(client.by_name("x:one").unwrap().id, 64);
        assert_eq!(client.by_id(65).unwrap().name, "x:two");
    }

    #[test]
    fn sync_policies() {
        let mut server = Registry::<12>::new();
        server.register_raw("x:one", None, Rules::NONE).unwrap();
        server
            .register_raw("x:extra", Some(90), Rules::NONE)
            .unwrap();
        let mut client = Registry::<12>::new();
        client
            .register_raw("x:mine", Some(64), Rules::NONE)
            .unwrap();
        client.register_raw("x:one", None, Rules::NONE).unwrap();
        let before = client.clone();
        assert_eq!(
            synced(&server, &mut client, SyncPolicy::CloseConnection),
            Err(SyncError::Mismatch)
        );
        assert_eq!(client.entries(), before.entries());
        // x:one would take 64, which x:mine holds: refused, unchanged.
        assert_eq!(
            synced(&server, &mut client, SyncPolicy::Ignore),
            Err(SyncError::DuplicateId)
        );
        let mut client = Registry::<12>::new();
        client
            .register_raw("x:mine", Some(100), Rules::NONE)
            .unwrap();
        client.register_raw("x:one", None, Rules::NONE).unwrap();
        assert_eq!(synced(&server, &mut client, SyncPolicy::Ignore), Ok(()));
        assert_eq!(client.by_name("x:one").unwrap().id, 64);
        assert_eq!(client.by_name("x:mine").unwrap().id, 100);
    }
}
