//! Generates the `conductor.v1` messages, client and server from the proto
//! (protoc comes from `cargo xtask deps`: Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/conductor/v1/conductor.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Clients connect over a Unix socket, never by URL.
        .build_transport(false)
        // Reflection serves this so that grpcurl & co. need no .proto file.
        .file_descriptor_set_path(out.join("conductor_v1_descriptor.bin"))
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
