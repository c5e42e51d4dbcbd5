//! Links the compression libraries that Debian's static librocksdb.a needs.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for lib in ["snappy", "lz4", "zstd", "bz2", "z", "stdc++"] {
        println!("cargo:rustc-link-lib={lib}");
    }
}
