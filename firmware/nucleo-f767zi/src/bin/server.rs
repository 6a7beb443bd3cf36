//! NUCLEO-F767ZI as server: gets a DHCP lease and serves the shared echo
//! server role ([`scenario::server`]) with 4 slots on port 4242 until a
//! client sends `!shutdown`; a fifth concurrent client is refused with
//! `serverfull`. The counters go to defmt (`SUMMARY server: ...`), the
//! outcome to the LEDs.
//! The `main` is [`scenario::board_main!`]'s.
#![no_std]
#![no_main]

scenario::board_main!(server, nucleo_f767zi);
