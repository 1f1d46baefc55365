//! The aarch64 release binary runs under qemu-aarch64-static. The test script
//! builds it before the tests run (`cargo build --release --target
//! aarch64-unknown-linux-gnu`).

mod common;

use std::process::Command;

fn arm_binary() -> std::path::PathBuf {
    let p = common::target_dir().join("aarch64-unknown-linux-gnu/release/commonscloud");
    assert!(
        p.exists(),
        "{} is missing: run provision/test.sh, which builds it, or `cargo build --release --target aarch64-unknown-linux-gnu`",
        p.display()
    );
    p
}

fn qemu(args: &[&str]) -> std::process::Output {
    Command::new("qemu-aarch64-static")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(arm_binary())
        .args(args)
        .output()
        .expect("qemu-aarch64-static (apt install qemu-user-static)")
}

#[test]
fn is_an_aarch64_elf() {
    let bytes = std::fs::read(arm_binary()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        0xB7,
        "e_machine AArch64"
    );
}

#[test]
fn version_runs_under_qemu() {
    let out = qemu(&["--version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("commonscloud {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_check_of_the_example_runs_under_qemu() {
    let example = common::repo().join("provision/appliance.example.toml");
    let out = qemu(&["--config", example.to_str().unwrap(), "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("slug = \"quimper\""), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid"));
    // And an error is still an error there.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[collective]\nnmae = 1\n").unwrap();
    let out = qemu(&["--config", bad.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("collective.nmae"));
}
