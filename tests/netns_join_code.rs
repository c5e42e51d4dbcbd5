//! Joining by discovery on the local network: a server finds the cluster by broadcast and
//! joins with a token; another joins without one, shows a join code, and is admitted when
//! an administrator accepts that code in the web console; a third is rejected from the CLI
//! and writes nothing.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::console::Console;
use common::{stderr, wait_for, Cluster, BIN};

/// `strata join discover` (no token) in node `i`'s namespace, output to a file.
fn join_without_token(c: &Cluster, i: usize) -> (Child, std::path::PathBuf) {
    let n = &c.nodes[i];
    let out = n.dir.with_extension("join.out");
    let f = std::fs::File::create(&out).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &n.ns, BIN, "--data-dir"])
        .arg(&n.dir)
        .args(["join", "discover", "--listen", &n.addr()])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, out)
}

fn code_in(out: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(out).ok()?;
    let line = text.lines().find(|l| l.starts_with("STRATA-JOIN-CODE "))?;
    Some(line["STRATA-JOIN-CODE ".len()..].trim().to_string())
}

fn exit_of(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    wait_for(within, || child.try_wait().ok().flatten())
}

#[test]
fn servers_find_the_cluster_and_join_by_token_or_accepted_code() {
    let mut c = Cluster::topology(4);
    c.nodes[0].env = vec![("STRATA_DISCOVERY".into(), "true".into())];
    let first = &c.nodes[0];
    let o = first.cli(&["init", "--listen", &first.addr(), "--cluster-name", "lab"]);
    assert!(o.status.success(), "init: {}", stderr(&o));
    c.nodes[0].start();

    // With a token and no address: found by broadcast, joined at once.
    let token = c.token(0, "10m");
    let n1 = &c.nodes[1];
    let o = n1.in_ns(&[
        BIN,
        "--data-dir",
        n1.dir.to_str().unwrap(),
        "join",
        "discover",
        "--token",
        &token,
        "--listen",
        &n1.addr(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "join: {}{}", out, stderr(&o));
    assert!(
        out.contains(&format!("found cluster lab at {}", c.nodes[0].addr())),
        "{out}"
    );
    c.nodes[1].start();

    // Without a token: a join code, the same on the server and in the web console.
    let (mut joiner, out) = join_without_token(&c, 2);
    let code = wait_for(Duration::from_secs(30), || code_in(&out))
        .unwrap_or_else(|| panic!("no join code: {:?}", std::fs::read_to_string(&out)));
    assert_eq!(code.len(), 9, "{code}");
    let s = Console::sign_in(&c);
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(page.contains("Servers asking to join"), "{page}");
    assert!(
        page.contains(&code),
        "the console does not show {code}: {page}"
    );
    assert!(page.contains(&c.nodes[2].addr()), "{page}");
    let requests = c.nodes[0].cli(&["node", "requests", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&requests.stdout).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code.as_str())
        .and_then(|r| r["node"].as_str())
        .expect("the request is listed")
        .to_string();

    // Still waiting: nothing written; a forged form is refused.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        joiner.try_wait().unwrap().is_none(),
        "joined without acceptance"
    );
    assert!(!c.nodes[2].dir.join("node.toml").exists());
    let bad = s.curl(&[
        "-i",
        "-d",
        "csrf=forged",
        &s.url(&format!("/nodes/requests/{id}/accept")),
    ]);
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");

    let r = s.post(&format!("/nodes/requests/{id}/accept"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let st = exit_of(&mut joiner, Duration::from_secs(30)).expect("join did not finish");
    assert!(
        st.success(),
        "join: {}",
        std::fs::read_to_string(&out).unwrap()
    );
    drop(s);
    c.nodes[2].start();
    let s = Console::sign_in(&c);
    wait_for(Duration::from_secs(30), || {
        let s = c.nodes[0].status()?;
        (s["nodes_alive"].as_u64()? == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("3 nodes not alive: {:?}", c.nodes[0].status()));
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(!page.contains(&code), "an admitted request is still listed");
    let audit = s.curl(&[&s.url("/audit?all=1&q=node.join")]);
    assert!(audit.contains("node.join.accept"), "{audit}");

    // Rejected from the CLI by its code: the joiner stops, saying so, and writes nothing.
    let (mut joiner, out) = join_without_token(&c, 3);
    let code = wait_for(Duration::from_secs(30), || code_in(&out)).expect("no join code");
    let o = c.nodes[0].cli(&["node", "reject", &code.to_lowercase()]);
    assert!(o.status.success(), "reject: {}", stderr(&o));
    let st = exit_of(&mut joiner, Duration::from_secs(30)).expect("join did not stop");
    let mut text = String::new();
    std::fs::File::open(&out)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(!st.success());
    assert!(text.contains("rejected the join request"), "{text}");
    assert!(!c.nodes[3].dir.join("node.toml").exists());
    let o = c.nodes[0].cli(&["node", "accept", "XXXX-XXXX"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no join request"), "{}", stderr(&o));
}
