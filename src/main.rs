//! `strata`: one binary, every role.

use clap::Parser;
use strata::{cli, telemetry};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Cmd::Vmm { dir, .. } = &cli.cmd {
        // The per-VM worker: plain threads, no async runtime.
        telemetry::init_logging(strata::config::LogFormat::Text);
        return match strata::compute::worker::run(dir) {
            Ok(0) => std::process::ExitCode::SUCCESS,
            Ok(code) => std::process::ExitCode::from(code.clamp(1, 255) as u8),
            Err(e) => {
                eprintln!("strata vmm: error: {}", telemetry::error_chain(&e));
                std::process::ExitCode::FAILURE
            }
        };
    }
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
