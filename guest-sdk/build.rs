//! Stamps the compiler's version and flags into the SDK: the layout of the standard types in a
//! state kept in place depends on them, so they are part of the layout description
//! (`src/layout.rs`).
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|version| !version.is_empty());
    // Two builds that could not name their compiler must not compare equal: fail instead.
    let version = version.unwrap_or_else(|| panic!("`{rustc} --version` failed"));
    println!("cargo:rustc-env=HOTSWAP_RUSTC={version}");
    // Flags such as `-Zrandomize-layout` change layouts under the same compiler: the
    // description names a hash of them (FNV-1a; 0 without flags).
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let hash = flags.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let hash = if flags.is_empty() { 0 } else { hash };
    println!("cargo:rustc-env=HOTSWAP_RUSTFLAGS={hash:016x}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
}
