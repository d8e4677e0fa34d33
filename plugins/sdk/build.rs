//! Generates the wire types from `proto/abi.proto` into `OUT_DIR`.
//!
//! `protox` parses the schema in pure Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/abi.proto");
    let descriptors = protox::compile(["abi.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        // As the original course's build.rs did: every message (and oneof)
        // is `PartialOrd`, so lists of pairs or values sort with `partial_cmp`.
        .message_attribute(".", "#[derive(PartialOrd)]")
        .enum_attribute(".", "#[derive(PartialOrd)]")
        .compile_fds(descriptors)?;
    Ok(())
}
