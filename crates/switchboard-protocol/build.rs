//! Generates the backplane types from `proto/` with protox, so that building
//! needs no `protoc` on the machine.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // In the workspace the schema sits at the root; a packaged crate carries
    // its own copy next to this file.
    let root = [manifest_dir.join("../../proto"), manifest_dir.join("proto")]
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or("the proto/ directory was not found")?;

    let file = Path::new("switchboard/backplane/v1/backplane.proto");
    println!("cargo:rerun-if-changed={}", root.join(file).display());

    let descriptors = protox::compile([file], [&root])?;
    prost_build::Config::new()
        // Payload fields become `bytes::Bytes`, so decoding slices the
        // received buffer instead of copying it.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
