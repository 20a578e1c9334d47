//! A command whose stdout is a pipe nobody reads ends like any Unix tool:
//! quietly, by SIGPIPE, never with a panic message.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

mod common;

#[test]
fn closed_stdout_pipe_ends_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(common::BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run quarry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "quarry panicked on a closed stdout: {stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "expected death by SIGPIPE, got {:?}; stderr: {stderr}",
        out.status
    );
}
