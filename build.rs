//! Generates the gRPC code from proto/flashkv.proto with a vendored protoc,
//! so that a plain `cargo build` needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; protoc is looked up here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("flashkv_descriptor.bin"))
        .compile_protos(&["proto/flashkv.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/flashkv.proto");
    Ok(())
}
