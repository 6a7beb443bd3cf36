#![no_std]
#![forbid(unsafe_code)]
//! peng3dnet core
#[cfg(test)]
extern crate std;

pub mod codec;
pub mod connection;
pub mod messages;
pub mod registry;
pub mod rules;
pub mod table;
pub mod time;
pub mod types;
pub mod wire;
pub use types::*;
