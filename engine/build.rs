//! Generates the gRPC contract's Rust types from protos/, the same files the Python
//! stubs come from (scripts/gen_protos.sh), so the two views cannot drift apart.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../protos");
    println!("cargo:rerun-if-changed={}", protos.display());
    let descriptors = protox::compile(["quickpay/v1/settlement.proto"], [&protos])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
