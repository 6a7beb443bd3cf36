//! Raspberry Pi Pico W as server: joins `WIFI_SSID`, gets a DHCP lease and
//! serves the shared echo server role ([`scenario::server`]) with 4 slots
//! on port 4242 until a client sends `!shutdown`; a fifth concurrent client
//! is refused with `serverfull`. The counters go to defmt
//! (`SUMMARY server: ...`), the outcome to the LED. The `main` is
//! [`scenario::board_main!`]'s.
#![no_std]
#![no_main]

scenario::board_main!(server, pico_w);
