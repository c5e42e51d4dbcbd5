//! `strata vm ...` and `strata flavor list`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client;
use super::output;
use super::CliError;

// Parsed once per process; boxing `Create`'s fields would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Create a VM: validated, placed on a node, and started (unless --stopped).
    Create {
        /// Name of the VM.
        name: String,
        /// Flavor (see `strata flavor list`).
        #[arg(long, default_value = "m1.tiny")]
        flavor: String,
        /// vCPUs, overriding the flavor.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB, overriding the flavor.
        #[arg(long)]
        ram: Option<u64>,
        /// Linux kernel (bzImage or ELF vmlinux), present at this path on every node.
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs (cpio, possibly compressed).
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Kernel command line (default: console=ttyS0).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Raw disk image attached as the first virtio disk.
        #[arg(long)]
        disk: Option<PathBuf>,
        /// A replicated volume (id or name) attached as the first virtio disk; the VM is
        /// placed on a node holding a replica when one can take it.
        #[arg(long, conflicts_with = "disk")]
        volume: Option<String>,
        /// A tenant network (id or name) to put a NIC on (repeatable; a port is made on
        /// each, bound to the VM's node).
        #[arg(long)]
        network: Vec<String>,
        /// A file served to the guest as user data by the metadata service.
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// An OpenSSH public key file, served as key NAME (NAME=FILE, repeatable).
        #[arg(long)]
        ssh_key: Vec<String>,
        /// Keep VMs of the same group on different nodes.
        #[arg(long)]
        anti_affinity: Option<String>,
        /// Placement weigher: spread (most free memory) or pack.
        #[arg(long)]
        weigher: Option<String>,
        /// Create the VM without starting it.
        #[arg(long)]
        stopped: bool,
        /// Wait until the VM is ACTIVE (or failed), up to this many seconds.
        #[arg(long)]
        wait: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List VMs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one VM (by id or name).
    Show {
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped VM (or retry one that failed).
    Start {
        vm: String,
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Stop a VM: the ACPI power button, forced off after 15 s (`--force`: at once).
    Stop {
        vm: String,
        #[arg(long)]
        wait: Option<u64>,
        /// Power off at once instead of asking the guest to shut down.
        #[arg(long)]
        force: bool,
    },
    /// Reboot a running VM.
    Reboot { vm: String },
    /// Pause a running VM's vCPUs (its memory stays allocated).
    Pause {
        vm: String,
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Resume a paused VM.
    Resume {
        vm: String,
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Delete a VM; its node destroys it.
    Delete {
        vm: String,
        /// Wait until the node has destroyed it, up to this many seconds.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Print a VM's serial console (read on the node that runs it).
    Console {
        vm: String,
        /// Bytes from the end of the console log.
        #[arg(long, default_value_t = 65536)]
        bytes: u64,
        /// Keep printing new output until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Type TEXT into the console, then Enter (instead of printing it).
        #[arg(long = "type", value_name = "TEXT")]
        type_text: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FlavorCmd {
    /// List flavors.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn print(v: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", output::vm(v));
    }
}

/// Polls a VM until `done` says so or `secs` pass; returns the last view.
async fn wait_for(
    socket: &Path,
    vm: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = client::call(socket, "GET", &format!("/v1/vms/{vm}"), None).await?;
        if done(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "VM {vm} is still {} after {secs} s: {}",
                v["state"].as_str().unwrap_or("?"),
                v["reason"].as_str().unwrap_or("")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn settled(want: &'static str) -> impl Fn(&Value) -> bool {
    move |v| {
        let s = v["state"].as_str().unwrap_or("");
        s == want || s == "ERROR"
    }
}

pub async fn run_flavor(socket: &Path, cmd: &FlavorCmd) -> Result<(), CliError> {
    let FlavorCmd::List { json } = cmd;
    let v = client::call(socket, "GET", "/v1/flavors", None).await?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", output::flavors(&v));
    }
    Ok(())
}

pub async fn run(socket: &Path, cmd: &VmCmd) -> Result<(), CliError> {
    match cmd {
        VmCmd::Create {
            name,
            flavor,
            vcpus,
            ram,
            kernel,
            initrd,
            cmdline,
            disk,
            volume,
            network,
            user_data,
            ssh_key,
            anti_affinity,
            weigher,
            stopped,
            wait,
            json,
        } => {
            let user_data = match user_data {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| CliError::Usage(format!("user data {}: {e}", p.display())))?,
                ),
                None => None,
            };
            let mut keys = Vec::new();
            for k in ssh_key {
                let (name, file) = k
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--ssh-key {k:?} is not NAME=FILE")))?;
                let key = std::fs::read_to_string(file)
                    .map_err(|e| CliError::Usage(format!("SSH key {file}: {e}")))?;
                keys.push((name.to_string(), key.trim().to_string()));
            }
            let body = json!({
                "networks": network,
                "user_data": user_data,
                "public_keys": keys,
                "name": name,
                "flavor": flavor,
                "vcpus": vcpus,
                "ram_mb": ram,
                "boot": {
                    "kernel": abs(kernel),
                    "initrd": initrd.as_deref().map(abs),
                    "cmdline": cmdline,
                    "disk": disk.as_deref().map(abs),
                },
                "anti_affinity_group": anti_affinity,
                "weigher": weigher,
                "stopped": stopped,
                "volume": volume,
            });
            let mut v = client::call(socket, "POST", "/v1/vms", Some(body)).await?;
            if let (Some(secs), false) = (wait, stopped) {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                v = wait_for(socket, &id, *secs, settled("ACTIVE")).await?;
            }
            print(&v, *json);
            fail_on_error(&v)
        }
        VmCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/vms", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", output::vms(&v));
            }
            Ok(())
        }
        VmCmd::Show { vm, json } => {
            let v = client::call(socket, "GET", &format!("/v1/vms/{vm}"), None).await?;
            print(&v, *json);
            Ok(())
        }
        VmCmd::Start { vm, wait }
        | VmCmd::Stop { vm, wait, .. }
        | VmCmd::Pause { vm, wait }
        | VmCmd::Resume { vm, wait } => {
            let (action, want) = match cmd {
                VmCmd::Start { .. } => ("start", "ACTIVE"),
                VmCmd::Pause { .. } => ("pause", "PAUSED"),
                VmCmd::Resume { .. } => ("resume", "ACTIVE"),
                VmCmd::Stop { force: true, .. } => ("force-stop", "SHUTOFF"),
                _ => ("stop", "SHUTOFF"),
            };
            let mut v = client::call(
                socket,
                "POST",
                &format!("/v1/vms/{vm}/action"),
                Some(json!({"action": action})),
            )
            .await?;
            if let Some(secs) = wait {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                v = wait_for(socket, &id, *secs, settled(want)).await?;
            }
            print(&v, false);
            fail_on_error(&v)
        }
        VmCmd::Reboot { vm } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/vms/{vm}/action"),
                Some(json!({"action": "reboot"})),
            )
            .await?;
            println!(
                "reboot of VM {} requested",
                v["name"].as_str().unwrap_or(vm)
            );
            Ok(())
        }
        VmCmd::Delete { vm, wait } => {
            let v = client::call(socket, "DELETE", &format!("/v1/vms/{vm}"), None).await?;
            let id = v["deleted"].as_str().unwrap_or_default().to_string();
            if let Some(secs) = wait {
                // The VM is gone from the cluster once its node has dropped its status.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(*secs);
                loop {
                    match client::call(socket, "GET", &format!("/v1/vms/{id}/gone"), None).await {
                        Ok(v) if v["gone"] == true => break,
                        _ if tokio::time::Instant::now() >= deadline => {
                            return Err(CliError::Usage(format!(
                                "VM {id} was deleted but its node has not confirmed after {secs} s"
                            )))
                        }
                        _ => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
            }
            println!("deleted VM {} ({id})", v["name"].as_str().unwrap_or(vm));
            Ok(())
        }
        VmCmd::Console {
            vm,
            type_text: Some(text),
            ..
        } => {
            let data = format!("{text}\r");
            let body = serde_json::json!({
                "data": base64::engine::general_purpose::STANDARD.encode(data.as_bytes()),
            });
            client::call(socket, "POST", &format!("/v1/vms/{vm}/console"), Some(body)).await?;
            Ok(())
        }
        VmCmd::Console {
            vm, bytes, follow, ..
        } => {
            let mut offset: Option<u64> = None;
            let mut first = true;
            loop {
                let q = match offset {
                    Some(o) => format!("bytes=1048576&offset={o}"),
                    None => format!("bytes={bytes}"),
                };
                let v =
                    client::call(socket, "GET", &format!("/v1/vms/{vm}/console?{q}"), None).await?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                use std::io::Write;
                let mut out = std::io::stdout();
                let _ = out.write_all(&data);
                let _ = out.flush();
                offset = v["offset"].as_u64();
                if !*follow {
                    return Ok(());
                }
                if !first && data.is_empty() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                first = false;
            }
        }
    }
}

fn fail_on_error(v: &Value) -> Result<(), CliError> {
    if v["state"] == "ERROR" {
        return Err(CliError::Usage(format!(
            "VM {} is in ERROR: {}",
            v["name"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("")
        )));
    }
    Ok(())
}
