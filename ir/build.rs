//! Generates the distribution protocol's Rust types from `proto/` when the
//! `grpc` feature is on. protox parses the .proto in Rust: no system protoc.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "grpc")]
    {
        let fds = protox::compile(["meshc/distribution/v1/distribution.proto"], ["proto"])
            .unwrap_or_else(|e| panic!("proto/: {e}"));
        tonic_prost_build::configure()
            .build_transport(false)
            // Shared, reference-counted bodies: one resource goes to many
            // proxies without a copy each.
            .bytes(".meshc.distribution.v1.Resource.body")
            .compile_fds(fds)
            .unwrap_or_else(|e| panic!("generating the distribution protocol: {e}"));
    }
}
