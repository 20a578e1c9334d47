//! Debian's python3-rbd/python3-rados (the bindings OpenStack's drivers
//! use) on Quarry's library: tests/py/openstack_flow.py.

mod common;

#[test]
fn openstack_flow_through_python3_rbd() {
    let py = "/usr/bin/python3";
    let probe = std::process::Command::new(py)
        .args(["-c", "import rbd, rados"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "{py} cannot import rbd: install python3-rbd python3-rados (scripts/setup.sh does)"
    );
    let env = common::Env::new(&["data"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/openstack_flow.py");
    let (ok, out, err) = env.run(env.cmd(py).arg(&script).arg("data"));
    assert!(ok, "openstack_flow.py failed:\n{out}\n{err}");
    assert!(out.contains("python OK"), "{out}\n{err}");
}
