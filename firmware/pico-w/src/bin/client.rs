//! Raspberry Pi Pico W as client: joins `WIFI_SSID`, gets a DHCP lease,
//! connects to the host's `peng3dnet serve` at `PENG3DNET_SERVER`
//! (ADDR:PORT; both given at build time) and runs the shared client scenario ([`scenario::client`]); the
//! outcome goes to defmt (`SUMMARY client: ...` or `FAIL: ...`) and to the
//! LED (steady: passed, blinking: failed).
//! The `main` is [`scenario::board_main!`]'s.
#![no_std]
#![no_main]

scenario::board_main!(client, pico_w);
