//! `strata`: one binary, every role.

use clap::Parser;
use strata::{cli, telemetry};

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "vmm") {
        return vmm(&args[2..]);
    }
    // An installed node's PID 1 runs without an async runtime (it only supervises).
    if args.get(1).is_some_and(|a| a == "boot") && args.len() == 2 {
        strata::installer::boot::run();
    }
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: error: {}", telemetry::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `strata vmm --dir DIR --name MARKER`: the per-VM worker of the KVM driver (started by
/// the daemon). Handled before the CLI parser and without an async runtime, so the
/// worker touches (and keeps resident) as little of this binary as it can.
fn vmm(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--dir") => dir = it.next().map(std::path::PathBuf::from),
            Some("--name") => {
                it.next();
            }
            _ => {
                eprintln!("strata vmm: usage: strata vmm --dir DIR --name strata-vm-<id>");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("strata vmm: --dir DIR is required");
        return std::process::ExitCode::from(2);
    };
    strata::compute::worker::init_logging();
    match strata::compute::worker::run(&dir) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("strata vmm: error: {}", telemetry::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
