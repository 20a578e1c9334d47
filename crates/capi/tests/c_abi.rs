//! A C program compiled against Debian's real librbd/librados headers runs
//! against Quarry's library: struct layouts, errno conventions, aio and
//! poll-mode completions, snapshots, clones.

mod common;

#[test]
fn c_program_against_real_headers() {
    let env = common::Env::new(&["data"]);
    let bin = env.compile("abi_check.c", "abi_check");
    let (ok, out, err) = env.run(env.cmd(&bin).arg("data"));
    assert!(ok, "abi_check failed:\n{out}\n{err}");
    assert!(out.contains("abi_check OK"), "{out}");
}

/// The trash calls OpenStack's drivers use, from C against the real headers.
#[test]
fn trash_calls_from_c() {
    let env = common::Env::new(&["data"]);
    let bin = env.compile("trash.c", "trash");
    let (ok, out, err) = env.run(env.cmd(&bin).arg("data"));
    assert!(ok, "trash failed:\n{out}\n{err}");
    assert!(out.contains("trash OK"), "{out}");
}
