//! Links the images with cortex-m-rt's link.x (embassy-stm32's `memory-x`
//! feature writes memory.x) and defmt's defmt.x; says which build-time
//! settings were given.
use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PENG3DNET_SERVER");
    if env::var("TARGET").is_ok_and(|t| t.starts_with("thumb")) {
        println!("cargo:rustc-link-arg-bins=--nmagic");
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
    if env::var_os("PENG3DNET_SERVER").is_none() {
        println!(
            "cargo:warning=PENG3DNET_SERVER (ADDR:PORT of the host's peng3dnet serve) not set: the client image will only report that"
        );
    }
}
