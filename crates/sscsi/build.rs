//! Link options for a smaller binary, on Linux with glibc:
//! - packed relative relocations (DT_RELR): a PIE's relocation table, about a
//!   megabyte, in a fraction of the space; glibc 2.36 (Debian 12, the image's
//!   base) and later load it;
//! - identical code folding: the many monomorphic copies of one generic body
//!   that differ only in type are kept once. Rust makes no promise that two
//!   functions have distinct addresses, so folding them is within the language.

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        println!("cargo::rustc-link-arg-bins=-Wl,--icf=all");
    }
}
