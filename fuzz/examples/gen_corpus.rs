//! Writes the seed corpora, made from real frames, to `fuzz/corpus/<target>/`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`.
//! Replaces the files it writes; leaves other files alone.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = peng3dnet_fuzz::seeds::all();
    let mut counts = std::collections::BTreeMap::new();
    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        let e = counts.entry(*target).or_insert((0, 0));
        e.0 += 1;
        e.1 += bytes.len();
    }
    for (target, (n, bytes)) in counts {
        println!("{target}: {n} seeds, {bytes} bytes");
    }
}
