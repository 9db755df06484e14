//! Stamps the compiler's version into the SDK: the layout of the standard types in a state kept
//! in place depends on it, so it is part of the layout description (`src/layout.rs`).
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HOTSWAP_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
