//! Puts memory.x where cortex-m-rt's link.x finds it, turns nvram.txt (the
//! CYW43439's board settings, one `key=value` a line) into the chip's NVRAM
//! image (the settings NUL-separated, ending in two NULs), links with
//! link.x, embassy-rp's link-rp.x and defmt's defmt.x, and says which
//! build-time settings were given.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    let text = fs::read_to_string("nvram.txt").unwrap();
    let mut nvram = Vec::new();
    for setting in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
    {
        nvram.extend_from_slice(setting.as_bytes());
        nvram.push(0);
    }
    nvram.extend_from_slice(&[0, 0]);
    fs::write(out.join("nvram.bin"), nvram).unwrap();

    for f in ["memory.x", "nvram.txt", "build.rs"] {
        println!("cargo:rerun-if-changed={f}");
    }
    for v in ["PENG3DNET_SERVER", "WIFI_SSID", "WIFI_PASSWORD"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var("TARGET").is_ok_and(|t| t.starts_with("thumb")) {
        println!("cargo:rustc-link-arg-bins=--nmagic");
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        println!("cargo:rustc-link-arg-bins=-Tlink-rp.x");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
    if env::var_os("WIFI_SSID").is_none() {
        println!("cargo:warning=WIFI_SSID not set: the images will only report that");
    }
    if env::var_os("PENG3DNET_SERVER").is_none() {
        println!(
            "cargo:warning=PENG3DNET_SERVER (ADDR:PORT of the host's peng3dnet serve) not set: the client image will only report that"
        );
    }
}
