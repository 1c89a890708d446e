//! Compiles `proto/*.proto` with protox, a pure-Rust protobuf compiler, so no
//! `protoc` has to be installed to build sscsi.

use std::path::PathBuf;

/// Messages that carry secrets or tokens. prost would derive a `Debug` that
/// prints every field; these get hand-written redacting impls in `lib.rs`.
const SENSITIVE: &[&str] = &[
    ".csi.v1.NodePublishVolumeRequest",
    ".csi.v1.NodeStageVolumeRequest",
    ".v1alpha1.MountRequest",
    ".v1alpha1.File",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["csi.proto", "provider.proto", "registration.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let fds = protox::compile(files, [&proto_dir])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(SENSITIVE.iter().copied())
        .compile_fds(fds)?;
    Ok(())
}
