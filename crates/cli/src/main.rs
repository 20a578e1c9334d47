//! `quarry`: one binary for daemons and the `rbd`/`ceph` tools.

fn main() {
    eprintln!("quarry: no subcommands yet");
    std::process::exit(2);
}
