//! Generates the gRPC code from proto/flashkv.proto with a vendored protoc,
//! so that a plain `cargo build` needs no system package, and compiles the
//! C helper for Redis' long double arithmetic (src/resp/c/ldouble.c).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; protoc is looked up here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("flashkv_descriptor.bin"))
        .compile_protos(&["proto/flashkv.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/flashkv.proto");
    // INCRBYFLOAT's long double arithmetic (see src/resp/ldouble.rs).
    cc::Build::new()
        .file("src/resp/c/ldouble.c")
        .warnings(true)
        .compile("flashkv_ldouble");
    println!("cargo:rerun-if-changed=src/resp/c/ldouble.c");
    Ok(())
}
