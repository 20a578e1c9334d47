//! `quarry`: one binary for daemons and the `rbd`/`ceph`/`rados` tools.
//!
//! Dispatch stays a flat `match` on the subcommand; each command family
//! lives in its own module (`cluster` for mon/osd/up/down/status).

mod ceph;
mod cluster;
mod install;
mod rados;
mod rbd;
mod tools;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Create keyrings and keys (Ceph's `ceph-authtool`).
    Authtool(cluster::AuthtoolArgs),
    /// Start (or restart) a one-host cluster in the background.
    Up(cluster::UpArgs),
    /// Stop a cluster started by `quarry up`.
    Down(cluster::DirArgs),
    /// Print a summary of the cluster.
    Status(cluster::DirArgs),
    /// Manage images (Ceph's `rbd`; also runs as `rbd` through a symlink).
    Rbd(rbd::RbdArgs),
    /// Administer the cluster (Ceph's `ceph`; also runs as `ceph` through a symlink).
    Ceph(ceph::CephArgs),
    /// Work with pools and objects (Ceph's `rados`; also runs as `rados` through a symlink).
    Rados(rados::RadosArgs),
    /// Make Quarry the system's librbd/librados and rbd/ceph (undo with `uninstall`).
    Install(install::InstallArgs),
    /// Undo `quarry install`, restoring what it replaced.
    Uninstall(install::UninstallArgs),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() {
    let argv = tools::args();
    if argv.len() == 2 && argv[1] == "rbd" {
        // Ceph's `rbd` with no command prints its usage and succeeds.
        if let Some(rbd) = Cli::command().find_subcommand_mut("rbd") {
            let _ = rbd.print_help();
        }
        return;
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let tool = argv.get(1).and_then(|a| a.to_str()).unwrap_or_default();
            std::process::exit(tools::usage_error(tool, &e));
        }
    };
    if !matches!(cli.cmd, Cmd::Mon(_) | Cmd::Osd(_)) {
        default_sigpipe();
        if let Err(e) = tools::init_tool_logging() {
            eprintln!("error: {e}");
            std::process::exit(22);
        }
    }
    let r = match cli.cmd {
        Cmd::Mon(a) => cluster::mon(a),
        Cmd::Osd(a) => cluster::osd(a),
        Cmd::Authtool(a) => cluster::authtool(a),
        Cmd::Up(a) => cluster::up(a),
        Cmd::Down(a) => cluster::down(a),
        Cmd::Status(a) => cluster::status(a),
        Cmd::Rbd(a) => std::process::exit(rbd::run(a)),
        Cmd::Ceph(a) => std::process::exit(ceph::run(a)),
        Cmd::Rados(a) => std::process::exit(rados::run(a)),
        Cmd::Install(a) => install::install(a),
        Cmd::Uninstall(a) => install::uninstall(a),
        Cmd::Completions { shell } => {
            tools::completions(shell, &mut Cli::command());
            Ok(())
        }
    };
    if let Err(e) = r {
        eprintln!("quarry: {e}");
        std::process::exit(1);
    }
}

/// Lets a closed stdout pipe end a command quietly, as it ends any Unix
/// tool (`quarry up | head -1`, `rbd export img - | head -c 1`): Rust
/// ignores SIGPIPE, so the next print would panic instead. The daemons keep
/// ignoring it (a peer closing a socket must not kill them).
fn default_sigpipe() {
    // SAFETY: called at start-up, before any thread exists; resetting a
    // signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
