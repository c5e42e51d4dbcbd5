//! `strata volume ...`.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client;
use super::output;
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a replicated volume: its replicas are placed on distinct nodes with room.
    Create {
        name: String,
        /// Size: bytes, or with a unit (K, M, G, T; powers of 1024), e.g. 10G.
        #[arg(long)]
        size: String,
        /// Number of replicas (default 3; lowered, visibly, on smaller clusters).
        #[arg(long)]
        replicas: Option<u32>,
        /// Wait up to this many seconds for every replica node to hold its region.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// List volumes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one volume (by id or name), with its replicas.
    Show {
        volume: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a volume; every replica node frees its space.
    Delete { volume: String },
    /// Attach a volume to this node and export it over NBD on the node's local socket;
    /// prints the NBD URI (for qemu-img, qemu-io, QEMU, nbd-client). Takes the volume over
    /// from any other node: the previous writer is fenced.
    Export { volume: String },
    /// End a volume's attachment.
    Detach { volume: String },
    /// Take a point-in-time snapshot of a volume (copy-on-write: nothing is copied now;
    /// a block's old content is kept when it is first written afterwards).
    Snapshot { volume: String, name: String },
    /// Delete a snapshot (refused while clones of it exist).
    SnapshotDelete { volume: String, snapshot: String },
    /// Make a new volume from a snapshot without copying it: the clone reads the
    /// snapshot's blocks until it writes its own. SOURCE is VOLUME@SNAPSHOT or a snapshot id.
    Clone {
        source: String,
        name: String,
        /// Bigger than the snapshot, e.g. 20G (default: the snapshot's size).
        #[arg(long)]
        size: Option<String>,
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// Grow a volume (never shrink); NBD clients see the new size when they reconnect.
    Grow {
        volume: String,
        /// The new size, e.g. 20G.
        #[arg(long)]
        size: String,
    },
}

/// Parses `10G`, `512M`, `4096`, `1.5G` into bytes.
pub fn parse_size(s: &str) -> Result<u64, CliError> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let bad = || CliError::Usage(format!("size {s:?} is not a size like 4096, 512M or 10G"));
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v * mult as f64 > u64::MAX as f64 {
        return Err(bad());
    }
    Ok((v * mult as f64) as u64)
}

pub async fn run(socket: &Path, cmd: &VolumeCmd) -> Result<(), CliError> {
    match cmd {
        VolumeCmd::Create {
            name,
            size,
            replicas,
            wait,
        } => {
            let body = json!({"name": name, "size_bytes": parse_size(size)?, "replicas": replicas});
            let mut v = client::call(socket, "POST", "/v1/volumes", Some(body)).await?;
            if let Some(secs) = wait {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(*secs);
                while v["status"] == "creating" {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(CliError::Usage(format!(
                            "volume {name} is still creating after {secs} s: {}",
                            v["redundancy"].as_str().unwrap_or("")
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    // This node may apply the create a moment after the leader did.
                    if let Ok(next) =
                        client::call(socket, "GET", &format!("/v1/volumes/{id}"), None).await
                    {
                        v = next;
                    }
                }
            }
            print!("{}", output::volume(&v));
            Ok(())
        }
        VolumeCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/volumes", None).await?;
            print(&v, *json, output::volumes);
            Ok(())
        }
        VolumeCmd::Show { volume, json } => {
            let v = client::call(socket, "GET", &format!("/v1/volumes/{volume}"), None).await?;
            print(&v, *json, output::volume);
            Ok(())
        }
        VolumeCmd::Export { volume } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/volumes/{volume}/export"),
                Some(json!({})),
            )
            .await?;
            println!("{}", v["nbd"].as_str().unwrap_or(""));
            Ok(())
        }
        VolumeCmd::Detach { volume } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/volumes/{volume}/detach"),
                Some(json!({})),
            )
            .await?;
            print!("{}", output::volume(&v));
            Ok(())
        }
        VolumeCmd::Grow { volume, size } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/volumes/{volume}/grow"),
                Some(json!({"size_bytes": parse_size(size)?})),
            )
            .await?;
            print!("{}", output::volume(&v));
            Ok(())
        }
        VolumeCmd::Snapshot { volume, name } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/volumes/{volume}/snapshots"),
                Some(json!({"name": name})),
            )
            .await?;
            println!(
                "snapshot {} ({}) of volume {volume} taken",
                v["name"].as_str().unwrap_or("?"),
                v["id"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        VolumeCmd::SnapshotDelete { volume, snapshot } => {
            client::call(
                socket,
                "DELETE",
                &format!("/v1/volumes/{volume}/snapshots/{snapshot}"),
                None,
            )
            .await?;
            println!("deleted snapshot {snapshot} of volume {volume}");
            Ok(())
        }
        VolumeCmd::Clone {
            source,
            name,
            size,
            replicas,
        } => {
            let size = match size {
                Some(s) => parse_size(s)?,
                None => 0,
            };
            let body = json!({"name": name, "size_bytes": size, "replicas": replicas, "source_snapshot": source});
            let v = client::call(socket, "POST", "/v1/volumes", Some(body)).await?;
            print!("{}", output::volume(&v));
            Ok(())
        }
        VolumeCmd::Delete { volume } => {
            let v = client::call(socket, "DELETE", &format!("/v1/volumes/{volume}"), None).await?;
            println!(
                "deleted volume {} ({})",
                v["name"].as_str().unwrap_or("?"),
                v["deleted"].as_str().unwrap_or("?")
            );
            Ok(())
        }
    }
}

fn print(v: &Value, json: bool, human: fn(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_garbage_is_named() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("10g").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        for bad in ["", "G", "-1G", "ten", "1Q", "0"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
    }
}
