//! `quarry`: one binary for daemons and the `rbd`/`ceph` tools.
//!
//! Dispatch stays a flat `match` on the subcommand; each command family
//! lives in its own module (`cluster` for mon/osd/up/down/status).

mod cluster;

use clap::{Parser, Subcommand};

/// Quarry: distributed block storage for VMs.
#[derive(Parser, Debug)]
#[command(name = "quarry", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a monitor in the foreground.
    Mon(cluster::MonArgs),
    /// Run an object daemon in the foreground.
    Osd(cluster::OsdArgs),
    /// Start (or restart) a one-host cluster in the background.
    Up(cluster::UpArgs),
    /// Stop a cluster started by `quarry up`.
    Down(cluster::DirArgs),
    /// Print a summary of the cluster.
    Status(cluster::DirArgs),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Mon(a) => cluster::mon(a),
        Cmd::Osd(a) => cluster::osd(a),
        Cmd::Up(a) => cluster::up(a),
        Cmd::Down(a) => cluster::down(a),
        Cmd::Status(a) => cluster::status(a),
    };
    if let Err(e) = r {
        eprintln!("quarry: {e}");
        std::process::exit(1);
    }
}
