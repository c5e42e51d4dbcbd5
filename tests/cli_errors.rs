//! Bad input on the command line: clear messages naming the cause, non-zero exit, no panic,
//! and the data directory left as it was.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn strata(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().expect("spawn");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn unparseable_config_is_named_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "listen = [oops").unwrap();
    let data = d.path().join("data");
    let (ok, err) = strata(&[
        "--data-dir",
        data.to_str().unwrap(),
        "init",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml") && err.contains("not valid TOML"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!data.exists(), "a failed init created the data directory");
}

#[test]
fn a_port_in_use_is_named() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let (ok, err) = strata(&[
        "--data-dir",
        data.to_str().unwrap(),
        "init",
        "--listen",
        &addr,
    ]);
    assert!(ok, "{err}");
    let before = std::fs::read(data.join("node.toml")).unwrap();
    let (ok, err) = strata(&[
        "--data-dir",
        data.to_str().unwrap(),
        "serve",
        "--listen",
        &addr,
        "--metrics-listen",
        "off",
    ]);
    assert!(!ok);
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
    assert_eq!(std::fs::read(data.join("node.toml")).unwrap(), before);
    assert!(
        data.join("bootstrap").exists(),
        "bootstrap state must survive a failed start"
    );
}

#[test]
fn serving_an_empty_data_directory_says_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let (ok, err) = strata(&[
        "--data-dir",
        d.path().to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:7999",
    ]);
    assert!(!ok);
    assert!(
        err.contains("strata init") && err.contains("strata join"),
        "{err}"
    );
}

#[test]
fn cli_without_a_daemon_names_the_socket() {
    let d = tempfile::tempdir().unwrap();
    let (ok, err) = strata(&["--data-dir", d.path().to_str().unwrap(), "status"]);
    assert!(!ok);
    assert!(
        err.contains("strata.sock") && err.contains("strata serve"),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["init", "--help"],
        vec!["join", "--help"],
        vec!["token", "create", "--help"],
        vec!["status", "--help"],
        vec!["node", "list", "--help"],
        vec!["debug", "raft", "--help"],
        vec!["version", "--help"],
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn joining_an_unreachable_address_says_so_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    // A well-formed token for a cluster that is not there.
    let token = format!(
        "SJ1.{}.{}.{}",
        "ab".repeat(32),
        "cd".repeat(6),
        "ef".repeat(16)
    );
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let addr = silent.local_addr().unwrap().to_string();
    let start = std::time::Instant::now();
    let (ok, err) = strata(&[
        "--data-dir",
        data.to_str().unwrap(),
        "join",
        &addr,
        "--token",
        &token,
        "--listen",
        "127.0.0.1:7998",
    ]);
    assert!(!ok);
    assert!(err.contains(&format!("cannot reach {addr}")), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert!(!data.join("node.toml").exists());
}
