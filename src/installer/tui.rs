//! The interactive install, on the console, when no config source says what to do: a few
//! questions in plain text (works on a serial console and on a screen), each answer
//! checked as it is given, and nothing written before the person types `install`.
//! The answers become one more config layer ("the console"), validated like any other.

use std::io::{BufRead, Write};

use super::config::{InstallFile, Layer};
use super::disks::{Disk, MIN_DISK};
use crate::control::tokens::JoinToken;

/// What the person chose: the config layer and the disk (by its kernel name: they picked
/// it from the list on the screen).
pub struct Answers {
    pub layer: Layer,
    pub disk: String,
}

pub struct Console<'a, R: BufRead, W: Write> {
    pub input: &'a mut R,
    pub out: &'a mut W,
    /// Reads a line without echo where the console can do that.
    pub secret: fn(&mut R) -> std::io::Result<String>,
}

impl<R: BufRead, W: Write> Console<'_, R, W> {
    fn ask(&mut self, q: &str, default: &str) -> Result<String, String> {
        if default.is_empty() {
            let _ = write!(self.out, "{q}: ");
        } else {
            let _ = write!(self.out, "{q} [{default}]: ");
        }
        let _ = self.out.flush();
        let mut line = String::new();
        let n = self
            .input
            .read_line(&mut line)
            .map_err(|e| format!("reading the console: {e}"))?;
        if n == 0 {
            return Err("the console closed; nothing was written".into());
        }
        let a = line.trim();
        Ok(if a.is_empty() {
            default.into()
        } else {
            a.into()
        })
    }

    fn say(&mut self, s: &str) {
        let _ = writeln!(self.out, "{s}");
    }

    fn password(&mut self) -> Result<String, String> {
        loop {
            let _ = write!(
                self.out,
                "Password for the user admin (8 characters or more): "
            );
            let _ = self.out.flush();
            let p = (self.secret)(self.input).map_err(|e| e.to_string())?;
            let _ = writeln!(self.out);
            if p.chars().count() < 8 {
                self.say("  too short");
                continue;
            }
            let _ = write!(self.out, "The same password again: ");
            let _ = self.out.flush();
            let again = (self.secret)(self.input).map_err(|e| e.to_string())?;
            let _ = writeln!(self.out);
            if again != p {
                self.say("  the two differ; again");
                continue;
            }
            return Ok(p);
        }
    }
}

/// Asks the questions. `disks` are the machine's disks, `boot` the installer's own.
pub fn ask<R: BufRead, W: Write>(
    c: &mut Console<R, W>,
    disks: &[Disk],
    boot: &[String],
) -> Result<Answers, String> {
    c.say("No install config was found (in the image, on a STRATACFG stick or on the kernel");
    c.say("command line). Answer these questions to install; nothing is written to any disk");
    c.say("before the last one.");
    let cands: Vec<&Disk> = disks.iter().filter(|d| !boot.contains(&d.name)).collect();
    if cands.is_empty() {
        return Err("no disk to install on: the machine has none besides the installer's".into());
    }
    c.say("Disks:");
    for (i, d) in cands.iter().enumerate() {
        c.say(&format!("  {}) {}", i + 1, d.describe()));
    }
    let disk = loop {
        let a = c.ask("Install on disk number", "1")?;
        match a
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| cands.get(i))
        {
            Some(d) if d.size < MIN_DISK => c.say(&format!(
                "  {} is too small: Strata needs at least {}",
                d.name,
                super::human(MIN_DISK)
            )),
            Some(d) => break *d,
            None => c.say(&format!("  answer a number from 1 to {}", cands.len())),
        }
    };
    let mut f = InstallFile {
        schema: Some(1),
        ..Default::default()
    };
    loop {
        match c
            .ask("Create a new cluster or join one (create/join)", "create")?
            .as_str()
        {
            "create" => {
                f.mode = Some("create".into());
                f.cluster_name = Some(c.ask("Cluster name", "strata")?);
                f.admin_password = Some(c.password()?);
                break;
            }
            "join" => {
                f.mode = Some("join".into());
                f.join = loop {
                    let a = c.ask(
                        "Address of a node of the cluster (IP:port; empty: find it on this network)",
                        "",
                    )?;
                    if a.is_empty() {
                        break None;
                    }
                    if a.parse::<std::net::SocketAddr>().is_ok() {
                        break Some(a);
                    }
                    c.say("  not an address like 10.0.0.1:7440");
                };
                f.token = loop {
                    let t = c.ask(
                        "Join token (from `strata token create`; empty: show a join code to accept in the web console)",
                        "",
                    )?;
                    if t.is_empty() {
                        break None;
                    }
                    match JoinToken::parse(&t) {
                        Ok(_) => break Some(t),
                        Err(e) => c.say(&format!("  {e}")),
                    }
                };
                break;
            }
            _ => c.say("  answer create or join"),
        }
    }
    let host = c.ask("Host name", "")?;
    if !host.is_empty() {
        f.hostname = Some(host);
    }
    loop {
        match c.ask("Network: dhcp or static", "dhcp")?.as_str() {
            "dhcp" => break,
            "static" => {
                f.network.mode = Some("static".into());
                f.network.address = Some(loop {
                    let a = c.ask("Address/prefix (10.0.0.2/24)", "")?;
                    if a.parse::<ipnet::IpNet>().is_ok() {
                        break a;
                    }
                    c.say("  not an address/prefix");
                });
                let g = c.ask("Gateway (empty for none)", "")?;
                if !g.is_empty() {
                    f.network.gateway = Some(g);
                }
                break;
            }
            _ => c.say("  answer dhcp or static"),
        }
    }
    loop {
        match c
            .ask(
                "Serve network installs (PXE) to further servers on this network (yes/no)",
                "no",
            )?
            .as_str()
        {
            "yes" => {
                f.pxe = Some(true);
                break;
            }
            "no" => break,
            _ => c.say("  answer yes or no"),
        }
    }
    f.disk.wipe = Some("never".into());
    if !disk.partitions.is_empty() {
        c.say(&format!(
            "{} holds partitions ({}); installing erases them.",
            disk.name,
            disk.partitions.join(", ")
        ));
        f.disk.wipe = Some("always".into());
    }
    c.say(&super::describe_plan(disk, super::config::Wipe::Always));
    let a = c.ask(
        &format!("Type install to erase {} and install", disk.name),
        "",
    )?;
    if a != "install" {
        return Err(format!("not confirmed ({a:?}); nothing was written"));
    }
    Ok(Answers {
        layer: Layer {
            source: "the console".into(),
            file: f,
        },
        disk: disk.name.clone(),
    })
}

/// Reads a line from the terminal with echo off (a password); plain when not a terminal.
pub fn read_secret_tty<R: BufRead>(r: &mut R) -> std::io::Result<String> {
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a valid termios struct.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            let mut quiet = t;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &quiet);
            Some(t)
        } else {
            None
        }
    };
    let mut line = String::new();
    let res = r.read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restoring the settings read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::super::config::{self, DiskKind, Mode, Network};
    use super::*;

    fn disk(name: &str, gib: u64, parts: &[&str]) -> Disk {
        Disk {
            name: name.into(),
            size: gib << 30,
            kind: DiskKind::Ssd,
            removable: false,
            serial: String::new(),
            wwn: String::new(),
            model: "M".into(),
            partitions: parts.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn plain(r: &mut std::io::Cursor<Vec<u8>>) -> std::io::Result<String> {
        let mut l = String::new();
        r.read_line(&mut l)?;
        Ok(l.trim_end().to_string())
    }

    fn run(input: &str, disks: &[Disk]) -> (Result<Answers, String>, String) {
        let mut i = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut o = Vec::new();
        let mut c = Console {
            input: &mut i,
            out: &mut o,
            secret: plain,
        };
        let r = ask(&mut c, disks, &["sda".to_string()]);
        (r, String::from_utf8_lossy(&o).to_string())
    }

    #[test]
    fn a_person_answers_and_the_answers_are_a_valid_config() {
        let disks = [
            disk("sda", 1, &[]),
            disk("vda", 8, &[]),
            disk("vdb", 40, &["vdb1"]),
        ];
        // 3 is not a disk, 1 (vda) is too small, 2 (vdb) has a partition: erased only
        // after "install"; a short password, then two that differ, then good.
        let (r, out) = run(
            "3\n1\n2\n\nlab\nshort\nlongenough1\nlongenough2\nlongenough1\nlongenough1\nnode7\nstatic\n10.0.0.9/24\n10.0.0.1\nmaybe\nyes\ninstall\n",
            &disks,
        );
        let a = r.unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(a.disk, "vdb");
        assert!(out.contains("answer a number from 1 to 2"), "{out}");
        assert!(out.contains("vda is too small"), "{out}");
        assert!(
            out.contains("too short") && out.contains("the two differ"),
            "{out}"
        );
        assert!(out.contains("holds partitions (vdb1)"), "{out}");
        assert!(
            !out.contains("sda ("),
            "the installer's disk was offered: {out}"
        );
        assert!(
            !out.contains("longenough1"),
            "the password was echoed: {out}"
        );
        let cfg = config::merge(&[a.layer]).unwrap();
        assert!(
            matches!(&cfg.mode, Mode::Create { cluster_name, admin_password: Some(p) } if cluster_name == "lab" && p == "longenough1")
        );
        assert_eq!(cfg.wipe, config::Wipe::Always);
        assert_eq!(cfg.hostname.as_deref(), Some("node7"));
        assert!(matches!(cfg.network, Network::Static { .. }));
        assert!(cfg.pxe);
        assert!(out.contains("answer yes or no"), "{out}");
    }

    #[test]
    fn joining_checks_the_token_and_anything_but_install_writes_nothing() {
        let disks = [disk("vda", 20, &[])];
        let tok = format!(
            "SJ1.{}.{}.{}",
            "a".repeat(64),
            "b".repeat(12),
            "c".repeat(32)
        );
        let (r, out) = run(
            &format!("1\njoin\nnowhere\n10.0.0.1:7440\nSJ1.bad\n{tok}\n\ndhcp\nno\nno\n"),
            &disks,
        );
        let e = r.err().unwrap();
        assert!(e.contains("nothing was written"), "{e}");
        assert!(out.contains("not an address"), "{out}");
        assert!(out.contains("malformed join token"), "{out}");
        let (r, _) = run(
            &format!("1\njoin\n10.0.0.1:7440\n{tok}\n\n\n\ninstall\n"),
            &disks,
        );
        let cfg = config::merge(&[r.unwrap().layer]).unwrap();
        assert!(matches!(cfg.mode, Mode::Join { addr: Some(_), .. }));
        assert_eq!(cfg.wipe, config::Wipe::Never);
        assert!(!cfg.pxe, "network installs are off unless asked for");
        let (r, _) = run("", &[disk("sda", 20, &[])]);
        assert!(r.err().unwrap().contains("no disk to install on"));
        let (r, _) = run("1\n", &disks);
        assert!(r.err().unwrap().contains("console closed"));
    }
}
