//! The web console as a person uses it, in Debian's headless Chromium over WebDriver,
//! against a one-node cluster in a network namespace that boots a real (TCG) guest:
//! a wrong password, an administrator creating projects and users, a member uploading
//! the guest's kernel, initramfs and disk image with the upload form, bad input that
//! changes nothing, a script in a name shown as text, a network and an instance that
//! becomes ACTIVE without a reload, its serial console showing the guest's boot marker
//! and running what is typed, a volume attached to it (the guest sees the disk), another
//! project's member who sees none of it, a reader with no buttons whose posts are
//! refused, a key pair Strata generates (private key shown once), deleting everything
//! (the node's image cache empties itself), signing out, and an expired session. Screenshots of the
//! main pages go to target/console-screenshots.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "common/browser.rs"]
mod browser;

use browser::{artefacts, in_netns, ClientNs, Driver};
use common::Cluster;
use serde_json::json;
use thirtyfour::components::SelectElement;
use thirtyfour::prelude::*;

const IDLE_S: u64 = 20;

struct B {
    d: WebDriver,
    base: String,
}

impl B {
    async fn go(&self, path: &str) {
        self.d
            .goto(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn el(&self, id: &str) -> WebElement {
        match self.d.find(By::Id(id)).await {
            Ok(e) => e,
            Err(e) => panic!("no element #{id}: {e}\n{}", self.text().await),
        }
    }

    /// Opens the collapsible form that holds element `id`.
    async fn open(&self, id: &str) {
        self.d
            .execute(
                "const d = document.getElementById(arguments[0]).closest('details'); if (d) d.open = true;",
                vec![json!(id)],
            )
            .await
            .unwrap();
    }

    async fn fill(&self, id: &str, text: &str) {
        self.open(id).await;
        let e = self.el(id).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn pick(&self, id: &str, text: &str) {
        self.open(id).await;
        let s = SelectElement::new(&self.el(id).await).await.unwrap();
        s.select_by_exact_text(text)
            .await
            .unwrap_or_else(|e| panic!("#{id} has no option {text:?}: {e}"));
    }

    async fn click(&self, id: &str) {
        self.open(id).await;
        self.el(id).await.click().await.unwrap();
    }

    /// The page's visible text.
    async fn text(&self) -> String {
        match self.d.find(By::Tag("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The text of the row of table `table` whose first cell is `first` (read in the
    /// page in one step: live tables replace their rows as the cluster changes).
    async fn row_text(&self, table: &str, first: &str) -> String {
        let v = self
            .d
            .execute(
                "const [t, first] = arguments;\
                 const row = [...document.querySelectorAll('#' + t + ' tbody tr')]\
                   .find(r => r.cells[0] && r.cells[0].textContent.trim() === first);\
                 return row ? row.innerText : '';",
                vec![json!(table), json!(first)],
            )
            .await
            .unwrap();
        v.json().as_str().unwrap_or("").to_string()
    }

    async fn js(&self, script: &str) -> serde_json::Value {
        self.d.execute(script, vec![]).await.unwrap().json().clone()
    }

    /// Waits until the page's text contains `needle` (without reloading it).
    async fn wait_text(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text().await;
            if t.contains(needle) {
                return t;
            }
            if Instant::now() > deadline {
                self.shot("failed-wait").await;
                panic!("{needle:?} did not appear within {secs} s; page:\n{t}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.d.screenshot_as_png().await.unwrap();
        std::fs::write(artefacts().join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, user: &str, password: &str) {
        self.go("/login").await;
        self.fill("username", user).await;
        self.fill("password", password).await;
        self.click("sign-in").await;
        self.wait_text("Sign out", 10).await;
    }

    async fn sign_out(&self) {
        self.click("sign-out").await;
        self.wait_text("You have signed out", 10).await;
    }

    /// Clicks the button labelled `label` in the row of table `table` whose first cell is
    /// `first` (rows of live tables are replaced as the cluster changes, so this is done
    /// in one step in the page).
    async fn row_button(&self, table: &str, first: &str, label: &str) {
        let found = self
            .d
            .execute(
                "const [t, first, label] = arguments;\
                 const row = [...document.querySelectorAll('#' + t + ' tbody tr')]\
                   .find(r => r.cells[0] && r.cells[0].textContent.trim() === first);\
                 const b = row && [...row.querySelectorAll('button')].find(b => b.textContent.trim() === label);\
                 if (b) setTimeout(() => b.click(), 0);\
                 return !!b;",
                vec![json!(table), json!(first), json!(label)],
            )
            .await
            .unwrap()
            .json()
            .clone();
        assert_eq!(
            found,
            json!(true),
            "no {label} button for {first} in #{table}:\n{}",
            self.text().await
        );
    }

    /// Accepts a "Delete ...?" question.
    async fn accept(&self) {
        for _ in 0..20 {
            if self.d.accept_alert().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no confirmation was asked");
    }

    /// Posts to `path` from the page with the page's CSRF token; the HTTP status.
    async fn post_status(&self, path: &str, fields: &str) -> u64 {
        let script = format!(
            "const cb = arguments[arguments.length - 1];\
             const body = new URLSearchParams('{fields}'); body.append('csrf', document.body.dataset.csrf);\
             fetch('{path}', {{method: 'POST', body, redirect: 'manual'}}).then(r => cb(r.status)).catch(e => cb(-1));"
        );
        self.d
            .execute_async(script, vec![])
            .await
            .unwrap()
            .json()
            .as_u64()
            .unwrap_or(0)
    }
}

fn guest() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(k.exists() && i.exists(), "run `make images-guest` first");
    (k, i)
}

async fn upload(
    b: &B,
    name: &str,
    format: &str,
    file: &std::path::Path,
    boot: Option<(&str, &str)>,
) {
    b.go("/images").await;
    b.fill("new-image-name", name).await;
    b.pick("new-image-disk_format", format).await;
    if let Some((k, r)) = boot {
        b.pick("new-image-kernel_id", k).await;
        b.pick("new-image-ramdisk_id", r).await;
        b.fill("new-image-os_command_line", "console=ttyS0").await;
    }
    b.el("new-image-file")
        .await
        .send_keys(file.display().to_string())
        .await
        .unwrap();
    b.js("window.__upload_page = 1; return 1").await;
    b.click("new-image-submit").await;
    // The script records the image, sends the file with a progress bar, then loads the
    // list again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // One script, so the check and the status are read from the same page; while the
        // page is being replaced the script may fail, and is tried again.
        let got =
            b.d.execute(
                "if (window.__upload_page === undefined) return null;\
                 const s = document.getElementById('new-image-status');\
                 return s ? s.textContent : '';",
                vec![],
            )
            .await
            .map(|v| v.json().clone());
        if got.as_ref().is_ok_and(|v| v.is_null()) {
            break;
        }
        let status = got
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        assert!(
            !status.contains("failed") && !status.contains("Could not"),
            "upload of {name}: {status}"
        );
        assert!(
            Instant::now() < deadline,
            "upload of {name} did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = b.row_text("images", name).await;
    assert!(text.contains("active"), "image {name}: {text:?}");
}

async fn console_text(b: &B) -> String {
    b.js("return window.strataConsoleText ? window.strataConsoleText() : ''")
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_console(b: &B, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = console_text(b).await;
        if t.contains(needle) {
            return t;
        }
        if Instant::now() > deadline {
            b.shot("failed-console").await;
            panic!("{needle:?} not on the console within {secs} s:\n{t}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn type_console(b: &B, text: &str) {
    let area =
        b.d.find(By::Css("#terminal .xterm-helper-textarea"))
            .await
            .expect("the terminal takes keys");
    area.send_keys(text).await.unwrap();
}

async fn workflow(b: &B, admin_pw: &str) {
    let (kernel, initrd) = guest();
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    // A wrong password is refused in words; nothing is signed in. (The node's HTTPS
    // listener may answer a moment after the cluster formed: until then the browser
    // shows its own error page.)
    for _ in 0..40 {
        b.go("/").await;
        let url = b.d.current_url().await.unwrap();
        if url.scheme() == "https" && url.path().starts_with("/login") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(b
        .d
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/login"));
    b.shot("login").await;
    b.fill("username", "admin").await;
    b.fill("password", "not-the-password").await;
    b.click("sign-in").await;
    let t = b.wait_text("wrong", 10).await;
    assert!(t.contains("The user name or password is wrong."), "{t}");
    b.go("/instances").await;
    assert!(b
        .d
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/login"));

    // The administrator: dashboard, nodes, projects and users.
    b.sign_in("admin", admin_pw).await;
    let t = b.wait_text("Nodes up", 10).await;
    assert!(t.contains("1 / 1"), "{t}");
    assert!(t.contains("Raft leader"), "{t}");
    b.shot("dashboard").await;
    b.go("/nodes").await;
    b.wait_text("in service", 10).await;
    b.shot("nodes").await;
    b.go("/admin/projects").await;
    for p in ["demo", "other"] {
        b.fill("new-project-name", p).await;
        b.click("new-project-submit").await;
        b.wait_text(&format!("Project {p} created."), 10).await;
    }
    b.go("/admin/users").await;
    for (user, project, role) in [
        ("alice", "demo", "member"),
        ("bob", "demo", "reader"),
        ("eve", "other", "member"),
    ] {
        b.fill("new-user-name", user).await;
        b.fill("new-user-password", "pw-secret-1").await;
        b.pick("new-user-project", project).await;
        b.pick("new-user-role", role).await;
        b.click("new-user-submit").await;
        b.wait_text(&format!("User {user} created ({role} on {project})."), 10)
            .await;
    }
    // Bad input: a short password creates no user.
    b.fill("new-user-name", "mallory").await;
    b.fill("new-user-password", "short").await;
    b.click("new-user-submit").await;
    let t = b.wait_text("at least 8 characters", 10).await;
    assert!(!t.contains("User mallory created"), "{t}");
    b.shot("users").await;
    b.sign_out().await;

    // A member of demo: images uploaded through the form, with a progress bar.
    b.sign_in("alice", "pw-secret-1").await;
    let t = b.text().await;
    assert!(
        !t.contains("Projects") && !t.contains("Quotas"),
        "members see no admin pages: {t}"
    );
    upload(b, "guest-kernel", "aki", &kernel, None).await;
    upload(b, "guest-initrd", "ari", &initrd, None).await;
    upload(
        b,
        "guest",
        "ami",
        &disk,
        Some(("guest-kernel", "guest-initrd")),
    )
    .await;
    b.shot("images").await;

    // A network: a bad CIDR is explained and creates nothing; then a good one.
    b.go("/networks").await;
    b.fill("new-network-name", "net1").await;
    b.fill("new-network-cidr", "10.50.0.0/99").await;
    b.click("new-network-submit").await;
    let t = b.wait_text("is not a network", 10).await;
    assert!(
        t.contains("No networks yet."),
        "a bad CIDR made a network: {t}"
    );
    b.fill("new-network-cidr", "10.50.0.0/24").await;
    b.click("new-network-submit").await;
    let t = b.wait_text("Network net1 created.", 10).await;
    assert!(t.contains("10.50.0.0/24"), "{t}");
    b.shot("networks").await;

    // A volume whose name is markup: shown as text, never run.
    let evil = "<img src=x onerror=\"window.xss=1\">";
    b.go("/volumes").await;
    b.fill("new-volume-name", evil).await;
    b.fill("new-volume-size", "1").await;
    b.click("new-volume-submit").await;
    b.wait_text("is being created", 10).await;
    let cell = b
        .js("return document.querySelector('#volumes tbody tr td').textContent.trim()")
        .await;
    assert_eq!(cell, json!(evil));
    assert_eq!(b.js("return typeof window.xss").await, json!("undefined"));
    b.wait_text("available", 30).await;
    b.shot("volumes").await;

    // An instance: bad input first (no name) changes nothing.
    b.go("/instances").await;
    b.pick("new-instance-image", "guest").await;
    b.pick("new-instance-flavor", "m1.tiny (1 vCPU, 512 MiB, 1 GiB)")
        .await;
    b.pick("new-instance-network", "net1").await;
    b.click("new-instance-submit").await;
    let t = b.wait_text("Name: give a name", 10).await;
    assert!(t.contains("No instances yet."), "{t}");
    b.fill("new-instance-name", "web1").await;
    b.pick("new-instance-image", "guest").await;
    b.pick("new-instance-network", "net1").await;
    b.click("new-instance-submit").await;
    b.wait_text("Instance web1 is being created.", 20).await;
    // ACTIVE arrives without a reload: a marker set on this page survives.
    b.js("window.__same_page = 42; return 1").await;
    b.wait_text("ACTIVE", 120).await;
    assert_eq!(
        b.js("return window.__same_page").await,
        json!(42),
        "the page reloaded"
    );
    b.shot("instances").await;
    let href = b
        .js("return [...document.querySelectorAll('#instances a')].find(a => a.textContent === 'web1').getAttribute('href')")
        .await
        .as_str()
        .unwrap()
        .to_string();
    let vm_path = href.trim_start_matches(&b.base).to_string();
    let vm_id = vm_path.trim_start_matches("/instances/").to_string();

    // Its serial console: the boot marker, then what is typed runs in the guest.
    b.go(&vm_path).await;
    b.wait_text("10.50.0.", 30).await;
    wait_console(b, "STRATA-GUEST-BOOT", 90).await;
    wait_console(b, "STRATA-GUEST-SHELL", 90).await;
    type_console(b, "echo typed-$((6*7))\n").await;
    wait_console(b, "typed-42", 30).await;
    b.shot("instance-console").await;

    // Attach the volume; the guest sees a second disk.
    b.pick("attach-volume", &format!("{evil} (1.0 GiB)")).await;
    b.click("attach-submit").await;
    let t = b.wait_text("is being attached", 10).await;
    assert!(t.contains("data disk"), "{t}");
    wait_console(b, "STRATA-GUEST-SHELL", 5).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        type_console(b, "grep -c vdb /proc/partitions\n").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let c = console_text(b).await;
        if c.lines().any(|l| l.trim() == "1") {
            break;
        }
        assert!(Instant::now() < deadline, "the guest never saw vdb:\n{c}");
    }

    // Another project's member sees none of it.
    b.sign_out().await;
    b.sign_in("eve", "pw-secret-1").await;
    b.go("/instances").await;
    let t = b.wait_text("No instances yet.", 10).await;
    assert!(!t.contains("web1"), "{t}");
    b.go(&vm_path).await;
    let t = b.wait_text("There is no instance", 10).await;
    assert!(!t.contains("STRATA"), "{t}");
    b.go("/volumes").await;
    assert!(!b.text().await.contains("onerror"));
    b.sign_out().await;

    // A reader sees the instance but no buttons, and a post anyway is refused. Signing
    // in with the keyboard alone: the user name has the focus, Tab, Enter.
    b.go("/login").await;
    let focused = b.d.active_element().await.unwrap();
    assert_eq!(focused.id().await.unwrap().as_deref(), Some("username"));
    focused
        .send_keys("bob" + Key::Tab + "pw-secret-1" + Key::Enter)
        .await
        .unwrap();
    b.wait_text("Sign out", 10).await;
    b.go("/instances").await;
    let t = b.wait_text("web1", 10).await;
    assert!(t.contains("reader"), "{t}");
    assert!(
        b.d.find_all(By::Css("main button"))
            .await
            .unwrap()
            .is_empty(),
        "a reader got buttons: {t}"
    );
    assert!(!t.contains("Launch an instance"), "{t}");
    let code = b
        .post_status(&format!("/instances/{vm_id}/action"), "do=stop")
        .await;
    assert_eq!(code, 403, "a reader's stop was not refused");
    b.go(&vm_path).await;
    let t = b.wait_text("Read-only", 10).await;
    assert!(
        t.contains("ACTIVE"),
        "the reader's stop changed something: {t}"
    );
    b.sign_out().await;

    // A key pair Strata makes: the private key is shown once, with a download link,
    // and the list shows the pair afterwards (its public half only).
    b.sign_in("alice", "pw-secret-1").await;
    b.go("/keypairs").await;
    b.fill("create-keypair-name", "laptop").await;
    b.click("create-keypair-submit").await;
    let t = b.wait_text("Key pair laptop created", 10).await;
    assert!(t.contains("cannot show this again"), "{t}");
    let private = b.el("private-key").await.text().await.unwrap();
    assert!(
        private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
            && private
                .trim_end()
                .ends_with("-----END OPENSSH PRIVATE KEY-----"),
        "{private}"
    );
    let href = b
        .el("download-key")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        href.starts_with("data:") && href.contains("BEGIN%20OPENSSH%20PRIVATE%20KEY"),
        "{href}"
    );
    b.shot("keypair-created").await;
    b.click("back").await;
    let t = b.wait_text("SHA256:", 10).await;
    assert!(t.contains("laptop"), "the new pair is not listed: {t}");
    assert!(
        !t.contains("PRIVATE KEY"),
        "the private key is shown again: {t}"
    );
    // The same name again is refused by name, on the form that was sent.
    b.fill("create-keypair-name", "laptop").await;
    b.click("create-keypair-submit").await;
    b.wait_text("already exists", 10).await;

    // Delete everything as the member; first, the list on a phone's screen: nothing
    // sticks out sideways and the instance is there.
    b.d.set_window_rect(0, 0, 390, 844).await.unwrap();
    b.go("/instances").await;
    b.wait_text("web1", 10).await;
    let (scroll, inner) = (
        b.js("return document.documentElement.scrollWidth").await,
        b.js("return window.innerWidth").await,
    );
    assert!(
        scroll.as_u64().unwrap() <= inner.as_u64().unwrap(),
        "the page is wider than a phone: {scroll} > {inner}"
    );
    b.shot("instances-phone").await;
    b.d.set_window_rect(0, 0, 1280, 900).await.unwrap();
    b.go(&vm_path).await;
    b.row_button("attached", evil, "Detach").await;
    b.wait_text("is being detached", 10).await;
    b.click("action-delete").await;
    b.accept().await;
    b.wait_text("Instance web1 is being deleted.", 10).await;
    b.wait_text("No instances yet.", 120).await;
    b.go("/volumes").await;
    b.wait_text("available", 60).await;
    b.row_button("volumes", evil, "Delete").await;
    b.accept().await;
    b.wait_text("No volumes yet.", 30).await;
    // The network goes once the instance's port is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.go("/networks").await;
        b.row_button("networks", "net1", "Delete").await;
        b.accept().await;
        let t = b.wait_text("Networks", 10).await;
        if t.contains("No networks yet.") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the network was never freed: {t}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    b.go("/images").await;
    for name in ["guest", "guest-initrd", "guest-kernel"] {
        b.row_button("images", name, "Delete").await;
        b.accept().await;
        b.wait_text(&format!("Image {name} deleted."), 30).await;
    }
    b.wait_text("No images yet.", 10).await;

    // The audit log has who did what, with results.
    b.go("/audit?q=instance.create").await;
    let t = b.wait_text("instance.create", 10).await;
    assert!(
        t.contains("alice") && t.contains("web1") && t.contains("ok"),
        "{t}"
    );
    assert!(t.contains("refused: Name: give a name"), "{t}");
    b.shot("audit").await;

    // Signing out ends the session: pages go back to the sign-in page.
    b.sign_out().await;
    b.go("/instances").await;
    assert!(b
        .d
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/login"));

    // An idle session expires and says so.
    b.sign_in("alice", "pw-secret-1").await;
    b.go("/static/app.css").await;
    tokio::time::sleep(Duration::from_secs(IDLE_S + 3)).await;
    b.go("/instances").await;
    let t = b.wait_text("Your session has expired", 10).await;
    assert!(t.contains("Sign in"), "{t}");
}

#[test]
fn a_person_runs_the_cloud_from_the_browser() {
    let idle = IDLE_S.to_string();
    let c = Cluster::form_env(1, &[("STRATA_CONSOLE_IDLE_S", idle.as_str())]);
    let client = ClientNs::new(&c.hub, "10.77.0.200");
    let ns = client.ns.clone();
    let base = format!("https://{}:5000", c.nodes[0].ip);
    let pw = common::admin_password(&c);
    let driver = Driver::start(&ns, 9515);
    let r = in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let d = driver.session().await;
            let b = B { d, base };
            let r = tokio::spawn(async move {
                workflow(&b, &pw).await;
                b
            })
            .await;
            match r {
                Ok(b) => {
                    b.d.quit().await.unwrap();
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    });
    drop(client);
    match r {
        Ok(Ok(())) => {
            // The instance booted from cached kernel and initramfs images; with it and
            // the images deleted, the node's cache empties itself.
            let cache = common::data_dir_of(&c.nodes[0]).join("image-cache");
            assert!(cache.is_dir(), "no image cache at {}", cache.display());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left: Vec<_> = std::fs::read_dir(&cache)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                if left.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "deleted images stay in the node's cache: {left:?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(Err(e)) => panic!(
            "the browser workflow failed: {e}; node log:\n{}",
            c.nodes[0].log()
        ),
        Err(_) => panic!(
            "the browser thread panicked; node log:\n{}",
            c.nodes[0].log()
        ),
    }
}
