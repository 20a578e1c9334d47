//! Busybox-style dispatch (`rbd …` / `ceph …` through a symlink to
//! `quarry`) and shell completions.

use std::ffi::OsString;

/// The process arguments, with `rbd`/`ceph` inserted as the subcommand when
/// the binary was invoked under that name.
pub fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let tool = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    if let Some(t @ ("rbd" | "ceph")) = tool.as_deref() {
        args.insert(1, OsString::from(t));
    }
    args
}

/// Print completions for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
}
