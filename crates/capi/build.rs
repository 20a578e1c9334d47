//! Give the cdylib one SONAME so that `librbd.so.1` and `librados.so.2`
//! (both symlinks to it) are mapped once per process: see src/lib.rs.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librados.so.2");
    println!("cargo:rerun-if-changed=build.rs");
}
