//! `vxsec-lab`: builds a three-node lab in network namespaces and shows
//! vxsec at work (root). The lab is a demonstration and test harness, not
//! part of the agent: it runs the real `vxsec` binary in each node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Build a three-node lab in network namespaces and show vxsec at work (root).
#[derive(Parser)]
#[command(name = "vxsec-lab", version)]
struct Cli {
    /// Leave the lab running for poking around.
    #[arg(long)]
    keep: bool,
    /// AEAD suite for the lab's agents.
    #[arg(long)]
    suite: Option<String>,
    /// The `vxsec` binary to run in each node; default: the `vxsec` next to
    /// this program.
    #[arg(long, env = "VXSEC_BIN")]
    vxsec: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !vxsec::io::sys::is_root() {
        eprintln!("vxsec-lab: the lab builds network namespaces and needs root");
        return ExitCode::FAILURE;
    }
    let vxsec_binary = match cli.vxsec {
        Some(path) => path,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("vxsec"),
            Err(e) => {
                eprintln!("vxsec-lab: locating this program (to find vxsec beside it): {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !vxsec_binary.exists() {
        eprintln!(
            "vxsec-lab: no vxsec binary at {} (build it with `cargo build --bins -p vxsec`, or pass --vxsec)",
            vxsec_binary.display()
        );
        return ExitCode::FAILURE;
    }
    match vxsec_lab::run(vxsec_lab::LabOptions {
        keep: cli.keep,
        suite: cli.suite,
        vxsec_binary,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxsec-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
