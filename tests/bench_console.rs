//! `bench console` with tiny settings: both pages answered under load
//! through the real front door, and the ratio computed from the figures.

mod common;

#[test]
fn bench_console_measures_the_dashboard_against_the_sign_in_page() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "bench",
            "console",
            "--clients",
            "4",
            "--seconds",
            "1",
            "--attack-seconds",
            "1",
            "--attackers",
            "4",
            "--attack-addresses",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for page in ["baseline", "dashboard"] {
        assert!(v[page]["requests"].as_u64().unwrap() > 0, "{v:#}");
        assert_eq!(v[page]["errors"], 0, "{v:#}");
        assert!(v[page]["p99_ms"].as_f64().unwrap() >= v[page]["p50_ms"].as_f64().unwrap());
    }
    assert_eq!(v["dashboard"]["page"], "/console");
    let ratio =
        v["dashboard"]["p99_ms"].as_f64().unwrap() / v["baseline"]["p99_ms"].as_f64().unwrap();
    assert!(
        (v["p99_ratio"].as_f64().unwrap() - ratio).abs() < 1e-9,
        "{v:#}"
    );
    // Sign-in from the admin's own address, alone and while 4 connections
    // from 2 other addresses post wrong passwords for the same account.
    let s = &v["sign_in"];
    let (alone, attacked) = (
        s["unattacked_per_sec"].as_f64().unwrap(),
        s["attacked_per_sec"].as_f64().unwrap(),
    );
    assert!(alone > 0.0 && attacked > 0.0, "{s:#}");
    assert!((s["ratio"].as_f64().unwrap() - attacked / alone).abs() < 1e-9);
    assert_eq!(s["errors"], 0, "the admin was refused: {s:#}");
    assert!(s["attack_requests"].as_u64().unwrap() > 0, "{s:#}");
    // Only the per-account limit's worth of guesses reached slapd.
    assert!(s["attack_checked"].as_u64().unwrap() <= 5, "{s:#}");
}
