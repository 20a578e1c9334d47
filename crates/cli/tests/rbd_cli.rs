//! End-to-end tests of `quarry rbd` / `quarry ceph` against the embedded
//! backend (`quarry_embedded_dir` in a temp conf): every subcommand's happy
//! path, Ceph's error texts and exit codes, JSON outputs, export/import and
//! export-diff/import-diff round trips, busybox dispatch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_quarry");

struct Env {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    raw: Vec<u8>,
}

impl Env {
    /// A conf with an embedded store and a pool `data`.
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = format!(
            "[global]\nquarry_embedded_dir = {}\n",
            dir.path().join("store").display()
        );
        std::fs::write(dir.path().join("ceph.conf"), conf).expect("write conf");
        let e = Env { dir };
        e.ok(&["ceph", "osd", "pool", "create", "data"]);
        e.ok(&["rbd", "pool", "init", "data"]);
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .env("CEPH_CONF", self.path("ceph.conf"))
            // Never the machine's ~/.ceph: HOME is the test's directory.
            .env("HOME", self.dir.path())
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .stdin(Stdio::null());
        c
    }

    fn run_with(&self, mut c: Command, stdin: Option<&[u8]>) -> Out {
        let o = match stdin {
            None => c.output().expect("run quarry"),
            Some(data) => {
                use std::io::Write;
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut ch = c.spawn().expect("spawn");
                let mut si = ch.stdin.take().expect("stdin");
                si.write_all(data).expect("feed stdin");
                drop(si);
                ch.wait_with_output().expect("wait")
            }
        };
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            raw: o.stdout,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.cmd(Path::new(BIN), args), None)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "{args:?} failed: stdout={} stderr={}",
            o.stdout, o.stderr
        );
        o
    }

    /// Run expecting failure with exactly this exit code and stderr.
    fn fails(&self, args: &[&str], code: i32, stderr: &str) {
        let o = self.run(args);
        assert_eq!(
            o.code, code,
            "{args:?}: stdout={} stderr={}",
            o.stdout, o.stderr
        );
        assert_eq!(o.stderr, stderr, "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}: stdout={}", o.stdout);
    }

    fn json(&self, args: &[&str]) -> Value {
        let o = self.ok(args);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
    }
}

/// 5 MiB + 4 KiB of test data with a hole in the middle and at the end.
fn pattern_file(path: &Path) -> Vec<u8> {
    let mut v = vec![0u8; (5 << 20) + 4096];
    for (i, b) in v[..(1 << 20)].iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    for b in &mut v[(3 << 20)..(3 << 20) + 8192] {
        *b = 0xab;
    }
    std::fs::write(path, &v).expect("write pattern");
    v
}

#[test]
fn create_info_ls_resize_mv_rm_and_errors() {
    let e = Env::new();
    e.ok(&["rbd", "create", "data/img1", "--size", "1G"]);
    e.ok(&[
        "rbd",
        "create",
        "--size",
        "100",
        "-p",
        "data",
        "img2",
        "--image-feature",
        "layering",
        "--object-size",
        "1M",
    ]);
    // Ceph's other creation options: a shared image has no single-writer
    // features; thick provisioning allocates every block; default striping
    // is accepted, any other is refused, as are data pools; snapshot
    // creation takes the quiesce flags (no hooks to run here).
    e.ok(&[
        "rbd",
        "create",
        "data/shared",
        "--size",
        "8M",
        "--image-shared",
    ]);
    let j = e.json(&["rbd", "info", "data/shared", "--format", "json"]);
    assert_eq!(
        j["features"],
        serde_json::json!(["layering", "deep-flatten"]),
        "{j}"
    );
    e.ok(&[
        "rbd",
        "create",
        "data/thick",
        "--size",
        "8M",
        "--thick-provision",
        "--no-progress",
    ]);
    let j = e.json(&["rbd", "du", "data/thick", "--format", "json"]);
    assert_eq!(j["images"][0]["used_size"], 8 << 20, "{j}");
    e.ok(&[
        "rbd",
        "create",
        "data/plain",
        "--size",
        "8M",
        "--stripe-unit",
        "4M",
        "--stripe-count",
        "1",
    ]);
    let o = e.run(&[
        "rbd",
        "create",
        "data/fancy",
        "--size",
        "8M",
        "--stripe-unit",
        "64K",
        "--stripe-count",
        "4",
    ]);
    assert_eq!(o.code, 22, "{}", o.stderr);
    assert!(
        o.stderr.contains("fancy striping is not supported"),
        "{}",
        o.stderr
    );
    let o = e.run(&[
        "rbd",
        "create",
        "data/dp",
        "--size",
        "8M",
        "--data-pool",
        "rbd",
    ]);
    assert_eq!(o.code, 95, "{}", o.stderr);
    assert!(!e.ok(&["rbd", "ls", "data"]).stdout.contains("fancy"));
    e.ok(&["rbd", "snap", "create", "--skip-quiesce", "data/shared@s"]);
    e.ok(&[
        "rbd",
        "snap",
        "create",
        "--ignore-quiesce-error",
        "data/shared@t",
    ]);
    for i in ["shared", "thick", "plain"] {
        e.ok(&[
            "rbd",
            "snap",
            "purge",
            "--no-progress",
            &format!("data/{i}"),
        ]);
        e.ok(&["rbd", "rm", "--no-progress", &format!("data/{i}")]);
    }
    let info = e.ok(&["rbd", "info", "data/img1"]).stdout;
    assert!(info.starts_with("rbd image 'img1':\n\tsize 1 GiB in 256 objects\n\torder 22 (4 MiB objects)\n\tsnapshot_count: 0\n"), "{info}");
    assert!(info
        .contains("\tfeatures: layering, exclusive-lock, object-map, fast-diff, deep-flatten\n"));
    let j = e.json(&[
        "rbd",
        "info",
        "--format",
        "json",
        "--pretty-format",
        "data/img2",
    ]);
    assert_eq!(j["size"], 100 << 20);
    assert_eq!(j["order"], 20);
    assert_eq!(j["objects"], 100);
    assert_eq!(j["features"], serde_json::json!(["layering"]));
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "img1\nimg2\n");
    assert_eq!(
        e.json(&["rbd", "ls", "--format", "json", "data"]),
        serde_json::json!(["img1", "img2"])
    );
    let l = e.ok(&["rbd", "ls", "-l", "data"]).stdout;
    assert_eq!(l, "NAME  SIZE     PARENT  FMT  PROT  LOCK\nimg1    1 GiB            2            \nimg2  100 MiB            2            \n");
    let lj = e.json(&["rbd", "ls", "-l", "--format", "json", "data"]);
    assert_eq!(lj[0]["image"], "img1");
    assert_eq!(lj[0]["size"], 1u64 << 30);
    assert_eq!(lj[0]["format"], 2);

    // Ceph's errors and exit codes.
    e.fails(
        &["rbd", "info", "data/nosuchimage"],
        2,
        "rbd: error opening image nosuchimage: (2) No such file or directory\n",
    );
    e.fails(&["rbd", "ls", "nosuchpool"], 2, "rbd: error opening pool 'nosuchpool': (2) No such file or directory\nrbd: listing images failed: (2) No such file or directory\n");
    e.fails(
        &["rbd", "create", "data/img1", "--size", "1G"],
        17,
        "rbd: create error: (17) File exists\n",
    );
    e.fails(
        &[
            "rbd",
            "create",
            "data/img3",
            "--size",
            "100M",
            "--image-format",
            "1",
        ],
        22,
        "rbd: image format 1 is deprecated\nrbd: create error: (22) Invalid argument\n",
    );
    // Ceph 16's rbd: exit status 1 and this exact line for any bad size.
    for bad in ["10Q", "-1", "", "abc"] {
        e.fails(
            &["rbd", "create", "data/bad", "--size", bad],
            1,
            "rbd: the argument for option '--size' is invalid\n",
        );
    }
    e.fails(
        &["rbd", "create", "data/nosize"],
        22,
        "rbd: must specify --size <M/G/T>\n",
    );
    e.fails(
        &["rbd", "rm", "--no-progress", "data/nosuchimage"],
        2,
        "rbd: delete error: (2) No such file or directory\n",
    );

    // Resize: shrinking needs --allow-shrink.
    e.ok(&[
        "rbd",
        "resize",
        "data/img2",
        "--size",
        "200M",
        "--no-progress",
    ]);
    e.fails(
        &[
            "rbd",
            "resize",
            "data/img2",
            "--size",
            "50M",
            "--no-progress",
        ],
        22,
        "rbd: shrinking an image is only allowed with the --allow-shrink flag\n",
    );
    e.ok(&[
        "rbd",
        "resize",
        "data/img2",
        "--size",
        "50M",
        "--allow-shrink",
        "--no-progress",
    ]);
    assert!(e
        .ok(&["rbd", "info", "data/img2"])
        .stdout
        .contains("\tsize 50 MiB in 50 objects\n"));

    // mv, then rm.
    e.ok(&["rbd", "mv", "data/img2", "data/renamed"]);
    e.fails(
        &["rbd", "info", "data/img2"],
        2,
        "rbd: error opening image img2: (2) No such file or directory\n",
    );
    e.fails(
        &["rbd", "mv", "data/img1", "data/renamed"],
        17,
        "rbd: rename error: (17) File exists\n",
    );
    e.ok(&["rbd", "rm", "data/renamed"]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "img1\n");
    // --help works on subcommands.
    assert!(e
        .ok(&["rbd", "snap", "create", "--help"])
        .stdout
        .contains("Usage"));
}

#[test]
fn snapshots_clones_metadata_status_du() {
    let e = Env::new();
    e.ok(&["rbd", "create", "data/img1", "--size", "64M"]);
    e.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "64K",
        "--io-pattern",
        "seq",
        "data/img1",
    ]);
    e.ok(&["rbd", "snap", "create", "data/img1@s1"]);
    let ls = e.ok(&["rbd", "snap", "ls", "data/img1"]).stdout;
    assert!(
        ls.starts_with("SNAPID  NAME  SIZE    PROTECTED  TIMESTAMP"),
        "{ls}"
    );
    let sj = e.json(&["rbd", "snap", "ls", "--format", "json", "data/img1"]);
    assert_eq!(sj[0]["name"], "s1");
    assert_eq!(sj[0]["protected"], "false");
    e.fails(
        &["rbd", "snap", "create", "data/img1@s1"],
        17,
        "rbd: failed to create snapshot: (17) File exists\n",
    );

    e.ok(&["rbd", "snap", "protect", "data/img1@s1"]);
    e.fails(
        &["rbd", "snap", "protect", "data/img1@s1"],
        16,
        "rbd: snap is already protected\n",
    );
    e.ok(&["rbd", "clone", "data/img1@s1", "data/child1"]);
    assert_eq!(
        e.ok(&["rbd", "children", "data/img1@s1"]).stdout,
        "data/child1\n"
    );
    let cj = e.json(&["rbd", "children", "--format", "json", "data/img1@s1"]);
    assert_eq!(cj[0]["image"], "child1");
    let info = e.ok(&["rbd", "info", "data/child1"]).stdout;
    assert!(
        info.ends_with("\tparent: data/img1@s1\n\toverlap: 64 MiB\n"),
        "{info}"
    );
    assert_eq!(
        e.ok(&["rbd", "du", "data/child1"]).stdout,
        "NAME    PROVISIONED  USED\nchild1       64 MiB   0 B\n"
    );
    e.fails(
        &["rbd", "snap", "unprotect", "data/img1@s1"],
        16,
        "rbd: unprotecting snap failed: (16) Device or resource busy\n",
    );
    e.fails(
        &["rbd", "snap", "rm", "--no-progress", "data/img1@s1"],
        16,
        "rbd: snapshot 's1' is protected from removal.\n",
    );
    e.fails(&["rbd", "rm", "--no-progress", "data/img1"], 39, "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.\n");

    // The clone reads its parent's data; flatten detaches it.
    let before = e
        .ok(&["rbd", "export", "--no-progress", "data/child1", "-"])
        .raw;
    assert_eq!(&before[..4096], &[0x5au8; 4096][..]);
    e.ok(&["rbd", "flatten", "--no-progress", "data/child1"]);
    assert!(!e
        .ok(&["rbd", "info", "data/child1"])
        .stdout
        .contains("parent:"));
    assert_eq!(e.ok(&["rbd", "children", "data/img1@s1"]).stdout, "");
    assert_eq!(
        e.ok(&["rbd", "export", "--no-progress", "data/child1", "-"])
            .raw,
        before
    );
    e.fails(
        &["rbd", "flatten", "--no-progress", "data/child1"],
        22,
        "rbd: flatten error: (22) Invalid argument\n",
    );

    // du per snapshot and in total, plain and JSON.
    let du = e.ok(&["rbd", "du", "-p", "data"]).stdout;
    assert!(du.contains("img1@s1") && du.contains("<TOTAL>"), "{du}");
    let dj = e.json(&["rbd", "du", "--format", "json", "data/img1"]);
    assert_eq!(dj["images"][0]["snapshot"], "s1");
    assert_eq!(dj["images"][0]["used_size"], 4 << 20);

    // rename, rollback, purge.
    e.ok(&["rbd", "snap", "unprotect", "data/img1@s1"]);
    e.fails(
        &["rbd", "snap", "unprotect", "data/img1@s1"],
        22,
        "rbd: snap is already unprotected\n",
    );
    e.ok(&["rbd", "snap", "rename", "data/img1@s1", "data/img1@base"]);
    e.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "8K",
        "--io-pattern",
        "rand",
        "data/img1",
    ]);
    e.ok(&["rbd", "snap", "create", "data/img1@s2"]);
    e.ok(&["rbd", "snap", "rollback", "--no-progress", "data/img1@base"]);
    e.ok(&["rbd", "snap", "protect", "data/img1@s2"]);
    let o = e.run(&["rbd", "snap", "purge", "--no-progress", "data/img1"]);
    assert_eq!(o.code, 16, "{}", o.stderr);
    assert!(o.stderr.contains("'s2'"), "{}", o.stderr);
    e.ok(&["rbd", "snap", "unprotect", "data/img1@s2"]);
    e.ok(&["rbd", "snap", "purge", "--no-progress", "data/img1"]);
    assert_eq!(e.ok(&["rbd", "snap", "ls", "data/img1"]).stdout, "");

    // Snapshot limits, with Ceph's texts and exit codes.
    e.ok(&["rbd", "snap", "create", "data/img1@l1"]);
    e.ok(&["rbd", "snap", "limit", "set", "--limit", "1", "data/img1"]);
    e.fails(
        &["rbd", "snap", "create", "data/img1@l2"],
        122,
        "rbd: failed to create snapshot: (122) Disk quota exceeded\n",
    );
    e.fails(
        &["rbd", "snap", "limit", "set", "--limit", "0", "data/img1"],
        34,
        "rbd: setting snapshot limit failed: (34) Numerical result out of range\n",
    );
    e.fails(
        &["rbd", "snap", "limit", "set", "data/img1"],
        22,
        "rbd: limit was not specified\n",
    );
    e.ok(&["rbd", "snap", "limit", "clear", "data/img1"]);
    e.ok(&["rbd", "sparsify", "--no-progress", "data/img1"]);
    e.ok(&[
        "rbd",
        "sparsify",
        "--no-progress",
        "--sparse-size",
        "64K",
        "data/img1",
    ]);
    e.fails(
        &[
            "rbd",
            "sparsify",
            "--no-progress",
            "--sparse-size",
            "1000",
            "data/img1",
        ],
        22,
        "rbd: sparsify error: (22) Invalid argument\n",
    );
    e.fails(
        &["rbd", "sparsify", "--sparse-size", "lots", "data/img1"],
        1,
        "rbd: the argument for option '--sparse-size' is invalid\n",
    );
    e.ok(&["rbd", "snap", "create", "data/img1@l2"]);
    e.ok(&["rbd", "snap", "purge", "--no-progress", "data/img1"]);

    // image-meta.
    e.ok(&[
        "rbd",
        "image-meta",
        "set",
        "data/img1",
        "conf_rbd_cache",
        "false",
    ]);
    e.ok(&["rbd", "image-meta", "set", "data/img1", "owner", "ops"]);
    assert_eq!(
        e.ok(&["rbd", "image-meta", "get", "data/img1", "owner"])
            .stdout,
        "ops\n"
    );
    assert_eq!(
        e.json(&["rbd", "image-meta", "list", "--format", "json", "data/img1"]),
        serde_json::json!({"conf_rbd_cache": "false", "owner": "ops"})
    );
    let l = e.ok(&["rbd", "image-meta", "list", "data/img1"]).stdout;
    assert!(
        l.starts_with("There are 2 metadata on this image:\n\nKey "),
        "{l}"
    );
    e.ok(&["rbd", "image-meta", "remove", "data/img1", "owner"]);
    e.fails(
        &["rbd", "image-meta", "get", "data/img1", "owner"],
        2,
        "rbd: failed to get metadata owner of image : (2) No such file or directory\n",
    );

    // status: nobody watches an image nobody has open.
    assert_eq!(
        e.ok(&["rbd", "status", "data/img1"]).stdout,
        "Watchers: none\n"
    );
    assert_eq!(
        e.json(&["rbd", "status", "--format", "json", "data/img1"]),
        serde_json::json!({"watchers": []})
    );
    e.ok(&["rbd", "rm", "--no-progress", "data/img1"]);
}

fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("stat").blocks() * 512
}

#[test]
fn export_import_roundtrip_sparse_and_stdio_and_cp() {
    let e = Env::new();
    let src = e.path("src.raw");
    let data = pattern_file(&src);
    e.ok(&[
        "rbd",
        "import",
        "--no-progress",
        src.to_str().expect("utf8"),
        "data/imp",
    ]);
    assert_eq!(
        e.json(&["rbd", "info", "--format", "json", "data/imp"])["size"],
        data.len()
    );
    // Zero blocks were not written: the second object (all zeros) does not exist.
    let du = e.json(&["rbd", "diff", "--format", "json", "data/imp"]);
    let end: u64 = du
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x["offset"].as_u64().unwrap_or(0) + x["length"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    assert!(end <= (3 << 20) + 8192, "{du}");

    let out = e.path("out.raw");
    e.ok(&[
        "rbd",
        "export",
        "--no-progress",
        "data/imp",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(std::fs::read(&out).expect("read"), data);
    assert!(
        allocated_bytes(&out) < 2 << 20,
        "export is not sparse: {}",
        allocated_bytes(&out)
    );
    e.fails(
        &[
            "rbd",
            "export",
            "--no-progress",
            "data/imp",
            out.to_str().expect("utf8"),
        ],
        17,
        "rbd: export error: (17) File exists\n",
    );
    assert_eq!(
        e.ok(&["rbd", "export", "--no-progress", "data/imp", "-"])
            .raw,
        data
    );

    // Import from stdin.
    let o = e.run_with(
        e.cmd(
            Path::new(BIN),
            &["rbd", "import", "--no-progress", "-", "data/fromstdin"],
        ),
        Some(&data),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        e.json(&["rbd", "info", "--format", "json", "data/fromstdin"])["size"],
        data.len()
    );
    assert_eq!(
        e.ok(&["rbd", "export", "--no-progress", "data/fromstdin", "-"])
            .raw,
        data
    );
    let o = e.run(&[
        "rbd",
        "import",
        "--no-progress",
        src.to_str().expect("utf8"),
        "data/imp",
    ]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (17, "rbd: import failed: (17) File exists\n")
    );

    // cp, also from a snapshot.
    e.ok(&["rbd", "snap", "create", "data/imp@s"]);
    e.ok(&["rbd", "cp", "--no-progress", "data/imp@s", "data/copy"]);
    assert_eq!(
        e.ok(&["rbd", "export", "--no-progress", "data/copy", "-"])
            .raw,
        data
    );
    let o = e.run(&["rbd", "cp", "--no-progress", "data/imp", "data/copy"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (17, "rbd: copy failed: (17) File exists\n")
    );

    // deep cp: the snapshot comes along, with its own content; a clone's
    // deep copy is a clone of the same parent unless --flatten.
    e.ok(&[
        "rbd",
        "resize",
        "--allow-shrink",
        "--size",
        "1M",
        "data/imp",
    ]);
    e.ok(&[
        "rbd",
        "deep",
        "cp",
        "--no-progress",
        "data/imp",
        "data/deep",
    ]);
    assert!(e
        .ok(&["rbd", "snap", "ls", "data/deep"])
        .stdout
        .contains(" s "));
    assert_eq!(export_bytes(&e, "data/deep@s", "deep-s.raw"), data);
    assert_eq!(
        export_bytes(&e, "data/deep", "deep.raw"),
        export_bytes(&e, "data/imp", "imp.raw")
    );
    e.ok(&["rbd", "snap", "protect", "data/imp@s"]);
    e.ok(&["rbd", "clone", "data/imp@s", "data/kid"]);
    e.ok(&[
        "rbd",
        "deep",
        "copy",
        "--no-progress",
        "data/kid",
        "data/kid2",
    ]);
    assert!(e
        .ok(&["rbd", "info", "data/kid2"])
        .stdout
        .contains("parent: data/imp@s"));
    e.ok(&[
        "rbd",
        "deep",
        "cp",
        "--no-progress",
        "--flatten",
        "data/kid",
        "data/kid3",
    ]);
    assert!(!e
        .ok(&["rbd", "info", "data/kid3"])
        .stdout
        .contains("parent:"));
    assert_eq!(export_bytes(&e, "data/kid3", "kid3.raw"), data);
    let o = e.run(&[
        "rbd",
        "deep",
        "cp",
        "--no-progress",
        "data/kid",
        "data/kid2",
    ]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (17, "rbd: deep copy failed: (17) File exists\n")
    );
}

#[test]
fn export_diff_import_diff_reproduces_snapshots() {
    let e = Env::new();
    let src = e.path("src.raw");
    pattern_file(&src);
    e.ok(&[
        "rbd",
        "import",
        "--no-progress",
        src.to_str().expect("utf8"),
        "data/a",
    ]);
    e.ok(&["rbd", "snap", "create", "data/a@s1"]);
    e.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "128K",
        "--io-pattern",
        "seq",
        "data/a",
    ]);
    e.ok(&["rbd", "resize", "--no-progress", "data/a", "--size", "8M"]);
    e.ok(&["rbd", "snap", "create", "data/a@s2"]);
    let diff = e.ok(&["rbd", "diff", "data/a", "--from-snap", "s1"]).stdout;
    assert_eq!(
        diff, "Offset  Length  Type\n0       131072  data\n",
        "{diff}"
    );

    let d1 = e.path("a-s1.diff");
    let d2 = e.path("a-s1-s2.diff");
    e.ok(&[
        "rbd",
        "export-diff",
        "--no-progress",
        "data/a@s1",
        d1.to_str().expect("utf8"),
    ]);
    e.ok(&[
        "rbd",
        "export-diff",
        "--no-progress",
        "--from-snap",
        "s1",
        "data/a@s2",
        d2.to_str().expect("utf8"),
    ]);
    // Ceph's "rbd diff v1" framing: banner, from/to names, size, data, end.
    let b = std::fs::read(&d2).expect("read diff");
    let mut want = b"rbd diff v1\nf\x02\x00\x00\x00s1t\x02\x00\x00\x00s2s".to_vec();
    want.extend_from_slice(&(8u64 << 20).to_le_bytes());
    want.push(b'w');
    want.extend_from_slice(&0u64.to_le_bytes());
    want.extend_from_slice(&(128u64 << 10).to_le_bytes());
    assert_eq!(&b[..want.len()], &want[..]);
    assert_eq!(b.len(), want.len() + (128 << 10) + 1);
    assert_eq!(b[b.len() - 1], b'e');

    // Onto an image without the start snapshot: Ceph's refusal.
    e.ok(&["rbd", "create", "data/b", "--size", "1M"]);
    let o = e.run(&[
        "rbd",
        "import-diff",
        "--no-progress",
        d2.to_str().expect("utf8"),
        "data/b",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("rbd: start snapshot 's1' does not exist in the image, aborting\n"),
        "{}",
        o.stderr
    );

    e.ok(&[
        "rbd",
        "import-diff",
        "--no-progress",
        d1.to_str().expect("utf8"),
        "data/b",
    ]);
    // The second diff comes through stdin.
    let bytes = std::fs::read(&d2).expect("read");
    let o = e.run_with(
        e.cmd(
            Path::new(BIN),
            &["rbd", "import-diff", "--no-progress", "-", "data/b"],
        ),
        Some(&bytes),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let names: Vec<String> = e
        .json(&["rbd", "snap", "ls", "--format", "json", "data/b"])
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    for snap in ["s1", "s2"] {
        assert_eq!(
            e.ok(&[
                "rbd",
                "export",
                "--no-progress",
                &format!("data/a@{snap}"),
                "-"
            ])
            .raw,
            e.ok(&[
                "rbd",
                "export",
                "--no-progress",
                &format!("data/b@{snap}"),
                "-"
            ])
            .raw,
            "snapshot {snap} differs"
        );
    }
    let garbage = e.path("garbage");
    std::fs::write(&garbage, b"not a diff at all").expect("write");
    let o = e.run(&[
        "rbd",
        "import-diff",
        "--no-progress",
        garbage.to_str().expect("utf8"),
        "data/b",
    ]);
    assert_eq!(o.code, 22, "{}", o.stderr);
}

#[test]
fn busybox_symlinks_ceph_pools_and_completions() {
    let e = Env::new();
    let bin = e.path("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin.join("rbd")).expect("symlink rbd");
    std::os::unix::fs::symlink(BIN, bin.join("ceph")).expect("symlink ceph");
    let rbd = |args: &[&str]| e.run_with(e.cmd(&bin.join("rbd"), args), None);
    let ceph = |args: &[&str]| e.run_with(e.cmd(&bin.join("ceph"), args), None);
    assert_eq!(rbd(&["create", "data/x", "--size", "1"]).code, 0);
    assert_eq!(rbd(&["ls", "-p", "data"]).stdout, "x\n");
    assert_eq!(ceph(&["osd", "pool", "ls"]).stdout, "data\n");
    let o = ceph(&["osd", "pool", "create", "scratch"]);
    assert_eq!((o.code, o.stderr.as_str()), (0, "pool 'scratch' created\n"));
    let o = ceph(&["osd", "pool", "rm", "scratch"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "Error EPERM: WARNING: this will *PERMANENTLY DESTROY* all data stored in pool scratch.  If you are *ABSOLUTELY CERTAIN* that is what you want, pass the pool name *twice*, followed by --yes-i-really-really-mean-it.\n");
    let o = ceph(&[
        "osd",
        "pool",
        "rm",
        "scratch",
        "scratch",
        "--yes-i-really-really-mean-it",
    ]);
    assert_eq!((o.code, o.stderr.as_str()), (0, "pool 'scratch' removed\n"));
    assert_eq!(
        ceph(&["osd", "pool", "ls", "--format", "json"]).stdout,
        "[\"data\"]\n"
    );
    assert!(ceph(&["-s"]).stdout.contains("health: HEALTH_OK"));
    assert!(e.ok(&["completions", "bash"]).stdout.contains("rbd"));
    // No conf and no mon_host: refused with ENOENT, not a hang.
    let mut c = Command::new(BIN);
    c.args(["rbd", "ls"])
        .env_remove("CEPH_CONF")
        .env_remove("CEPH_ARGS")
        .env("HOME", e.path("nohome"))
        .current_dir(&bin)
        .stdin(Stdio::null());
    let o = c.output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("couldn't connect to the cluster!"));
}

/// Command-line mistakes get Ceph 16's messages and exit codes (checked
/// against Debian's rbd 16.2): a missing argument is EINVAL (22), an
/// unknown option or command exits 1; `--help` exits 0. `ceph` answers a
/// bad command with EINVAL. A namespace that does not exist is an error
/// (ENOENT), not an empty listing.
#[test]
fn usage_errors_and_missing_namespace() {
    let e = Env::new();
    e.fails(
        &["rbd", "create", "--size", "1G"],
        22,
        "rbd: image name was not specified\n",
    );
    e.fails(
        &["rbd", "ls", "--bogus"],
        1,
        "rbd: unrecognised option '--bogus'\n",
    );
    e.fails(
        &["rbd", "nosuchcmd"],
        1,
        "error: unknown option 'nosuchcmd'\n",
    );
    assert!(e.ok(&["rbd", "--help"]).stdout.contains("create"));
    assert!(
        e.ok(&["rbd"]).stdout.contains("create"),
        "bare rbd: usage, exit 0"
    );
    assert!(e.ok(&["rbd", "create", "--help"]).stdout.contains("--size"));
    assert!(e.ok(&["ceph", "config", "--help"]).stdout.contains("set"));
    let o = e.run(&["ceph", "osd", "pool", "get", "data"]);
    assert_eq!(o.code, 22, "{}", o.stderr);
    assert!(
        o.stderr.starts_with("Invalid command: ")
            && o.stderr.ends_with("Error EINVAL: invalid command\n"),
        "{}",
        o.stderr
    );
    // The daemons' own commands keep clap's convention.
    assert_eq!(e.run(&["up", "--bogus"]).code, 2);

    e.fails(
        &["rbd", "ls", "data/nons"],
        2,
        "rbd: namespace 'nons' does not exist.\nrbd: listing images failed: (2) No such file or directory\n",
    );
    e.fails(
        &["rbd", "create", "data/nons/img", "--size", "1M"],
        2,
        "rbd: namespace 'nons' does not exist.\n",
    );
    e.ok(&["rbd", "namespace", "create", "data/ns1"]);
    assert_eq!(e.ok(&["rbd", "ls", "data/ns1"]).stdout, "");
    e.ok(&["rbd", "create", "data/ns1/img", "--size", "1M"]);
    assert_eq!(e.ok(&["rbd", "ls", "data/ns1"]).stdout, "img\n");
}

/// Ceph's golden-image workflow: clone, snapshot the clone, flatten, then
/// the golden snapshot can be unprotected and removed (deep-flatten, the
/// default); a clone created with `--image-feature layering` keeps its
/// snapshot linked to the parent (EBUSY) until that snapshot goes.
#[test]
fn deep_flatten_frees_the_golden_snapshot() {
    let e = Env::new();
    let src = e.path("golden.bin");
    pattern_file(&src);
    let src = src.to_str().expect("utf-8 path");
    e.ok(&["rbd", "import", "--no-progress", src, "data/golden"]);
    e.ok(&["rbd", "snap", "create", "data/golden@s"]);
    e.ok(&["rbd", "snap", "protect", "data/golden@s"]);
    let export = |spec: &str| e.ok(&["rbd", "export", "--no-progress", spec, "-"]).raw;
    let bench = |image: &str, pattern: &str, total: &str| {
        e.ok(&[
            "rbd",
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-total",
            total,
            "--io-pattern",
            pattern,
            image,
        ]);
    };
    let mut before = Vec::new();
    for (name, features) in [("vm", None), ("shallow", Some("layering"))] {
        let image = format!("data/{name}");
        let backup = format!("{image}@backup");
        let mut args = vec!["rbd", "clone"];
        if let Some(f) = features {
            args.extend(["--image-feature", f]);
        }
        args.extend(["data/golden@s", image.as_str()]);
        e.ok(&args);
        bench(&image, "seq", "8K");
        e.ok(&["rbd", "snap", "create", &backup]);
        bench(&image, "rand", "256K");
        let (head, snap) = (export(&image), export(&backup));
        assert_ne!(head, snap, "{name}: the writes after the snapshot");
        e.ok(&["rbd", "flatten", "--no-progress", &image]);
        let info = e.ok(&["rbd", "info", &backup]).stdout;
        assert_eq!(info.contains("parent:"), features.is_some(), "{info}");
        assert_eq!(export(&image), head, "{name}");
        assert_eq!(export(&backup), snap, "{name}");
        before.push((image, backup, head, snap));
    }
    assert_eq!(
        e.ok(&["rbd", "children", "data/golden@s"]).stdout,
        "data/shallow\n"
    );
    e.fails(
        &["rbd", "snap", "unprotect", "data/golden@s"],
        16,
        "rbd: unprotecting snap failed: (16) Device or resource busy\n",
    );
    e.ok(&["rbd", "snap", "rm", "--no-progress", "data/shallow@backup"]);
    e.ok(&["rbd", "snap", "unprotect", "data/golden@s"]);
    e.ok(&["rbd", "snap", "rm", "--no-progress", "data/golden@s"]);
    for (image, backup, head, snap) in &before {
        assert_eq!(&export(image), head, "{image}");
        if image == "data/vm" {
            assert_eq!(&export(backup), snap, "{backup}");
        }
    }
}

/// Export `spec` and return its bytes.
fn export_bytes(e: &Env, spec: &str, file: &str) -> Vec<u8> {
    let out = e.path(file);
    let _ = std::fs::remove_file(&out);
    e.ok(&[
        "rbd",
        "export",
        "--no-progress",
        spec,
        out.to_str().expect("utf8"),
    ]);
    std::fs::read(&out).expect("read export")
}

/// The id of the one trash entry named `name` in `pool`.
fn trash_id(e: &Env, pool: &str, name: &str) -> String {
    let v = e.json(&["rbd", "trash", "ls", "--format", "json", pool]);
    let ids: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .filter(|x| x["name"] == name)
        .map(|x| x["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{v}");
    ids[0].clone()
}

#[test]
fn trash_moves_restores_removes_and_purges_images() {
    let e = Env::new();
    let src = e.path("src.raw");
    let data = pattern_file(&src);
    e.ok(&[
        "rbd",
        "import",
        "--no-progress",
        src.to_str().expect("utf8"),
        "data/vm1",
    ]);
    e.ok(&["rbd", "create", "data/other", "--size", "1M"]);

    // Moved: gone from the directory, listed in the trash, data kept.
    e.ok(&["rbd", "trash", "mv", "data/vm1"]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "other\n");
    let id = trash_id(&e, "data", "vm1");
    assert_eq!(
        e.ok(&["rbd", "trash", "ls", "data"]).stdout,
        format!("{id} vm1\n")
    );
    e.fails(
        &["rbd", "info", "data/vm1"],
        2,
        "rbd: error opening image vm1: (2) No such file or directory\n",
    );
    // `rbd pool stats` counts it apart (Ceph's lines and JSON).
    assert_eq!(
        e.ok(&["rbd", "pool", "stats", "data"]).stdout,
        "Total Images: 1 (1 in trash)\nTotal Snapshots: 0 (0 in trash)\n\
         Provisioned Size: 1 MiB (5.0 MiB in trash)\n"
    );
    let j = e.json(&["rbd", "pool", "stats", "data", "--format", "json"]);
    assert_eq!(j["images"]["count"], 1);
    assert_eq!(j["trash"]["provisioned_bytes"], data.len() as u64);
    let long = e.ok(&["rbd", "trash", "ls", "-l", "data"]).stdout;
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 2, "{long}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{long}"
    );
    assert!(
        lines[1].starts_with(&id) && lines[1].contains(" USER ") && lines[1].contains("expired at"),
        "{long}"
    );

    // Restore: onto a taken name is refused; under a new name the data is intact.
    e.ok(&["rbd", "create", "data/vm1", "--size", "1M"]);
    e.fails(
        &["rbd", "trash", "restore", &format!("data/{id}")],
        17,
        "rbd: error: an image with the same name already exists, try again with with a different name\n",
    );
    e.ok(&[
        "rbd",
        "trash",
        "restore",
        "-p",
        "data",
        "--image-id",
        &id,
        "--image",
        "vm1b",
    ]);
    assert_eq!(e.ok(&["rbd", "trash", "ls", "data"]).stdout, "");
    assert_eq!(export_bytes(&e, "data/vm1b", "a.raw"), data);
    e.fails(
        &["rbd", "trash", "restore", &format!("data/{id}")],
        2,
        "rbd: error: image does not exist in trash\n",
    );

    // A deferment protects from rm and purge until it ends or --force.
    e.ok(&["rbd", "trash", "mv", "data/vm1b", "--expires-at", "+1 day"]);
    let st = e.json(&["rbd", "trash", "ls", "-l", "--format", "json", "data"]);
    assert!(
        st[0]["status"]
            .as_str()
            .expect("status")
            .starts_with("protected until "),
        "{st}"
    );
    e.fails(
        &["rbd", "trash", "rm", &format!("data/{id}")],
        1,
        "rbd: Deferment time has not expired, please use --force if you really want to remove the image\n",
    );
    e.ok(&["rbd", "trash", "purge", "data"]);
    assert_eq!(trash_id(&e, "data", "vm1b"), id);
    e.ok(&[
        "rbd",
        "trash",
        "purge",
        "data",
        "--expired-before",
        "+2 days",
    ]);
    assert_eq!(e.ok(&["rbd", "trash", "ls", "data"]).stdout, "");
    // Its data objects went with it.
    let prefix = format!("rbd_data.{id}.");
    let objs = e.ok(&["rados", "-p", "data", "ls"]).stdout;
    assert!(!objs.contains(&prefix), "{objs}");

    // Snapshots block removal (the entry stays); a clone keeps reading its
    // trashed parent, which `rbd info` still names.
    e.ok(&[
        "rbd",
        "import",
        "--no-progress",
        src.to_str().expect("utf8"),
        "data/gold",
    ]);
    e.ok(&["rbd", "snap", "create", "data/gold@base"]);
    e.ok(&["rbd", "snap", "protect", "data/gold@base"]);
    e.ok(&["rbd", "clone", "data/gold@base", "data/vm2"]);
    // A trashed clone is listed by `rbd children` only with --all.
    e.ok(&["rbd", "clone", "data/gold@base", "data/vm3"]);
    e.ok(&["rbd", "trash", "mv", "data/vm3"]);
    let v3 = trash_id(&e, "data", "vm3");
    assert_eq!(
        e.ok(&["rbd", "children", "data/gold@base"]).stdout,
        "data/vm2\n"
    );
    assert_eq!(e.ok(&["rbd", "children", "data/gold"]).stdout, "data/vm2\n");
    assert_eq!(
        e.ok(&["rbd", "children", "--all", "data/gold@base"]).stdout,
        format!("data/vm2\ndata/vm3 (trash {v3})\n")
    );
    let cj = e.json(&[
        "rbd",
        "children",
        "-a",
        "--format",
        "json",
        "data/gold@base",
    ]);
    assert_eq!(cj[1]["trash"], true, "{cj}");
    assert_eq!(cj[1]["id"], v3.as_str(), "{cj}");
    assert_eq!(cj[0]["trash"], false, "{cj}");
    e.ok(&["rbd", "trash", "rm", &format!("data/{v3}")]);
    assert_eq!(
        e.ok(&["rbd", "children", "--all", "data/gold@base"]).stdout,
        "data/vm2\n"
    );
    e.ok(&["rbd", "trash", "mv", "data/gold"]);
    let gid = trash_id(&e, "data", "gold");
    assert_eq!(export_bytes(&e, "data/vm2", "b.raw"), data);
    let info = e.json(&["rbd", "info", "--format", "json", "data/vm2"]);
    assert_eq!(info["parent"]["image"], "gold", "{info}");
    assert_eq!(info["parent"]["trash"], true, "{info}");
    let text = e.ok(&["rbd", "info", "data/vm2"]).stdout;
    assert!(
        text.contains(&format!("\tparent: data/gold@base (trash {gid})\n")),
        "{text}"
    );
    e.fails(
        &["rbd", "trash", "rm", "--force", &format!("data/{gid}")],
        39,
        "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.\n",
    );
    assert_eq!(trash_id(&e, "data", "gold"), gid);
    e.ok(&["rbd", "rm", "--no-progress", "data/vm2"]);
    e.ok(&["rbd", "trash", "restore", &format!("data/{gid}")]);
    e.ok(&["rbd", "snap", "unprotect", "data/gold@base"]);
    e.ok(&["rbd", "snap", "rm", "--no-progress", "data/gold@base"]);
    e.ok(&["rbd", "trash", "mv", "data/gold"]);
    e.ok(&[
        "rbd",
        "trash",
        "rm",
        "--no-progress",
        &format!("data/{gid}"),
    ]);

    // A namespace with trashed images cannot be removed.
    e.ok(&["rbd", "namespace", "create", "data/ns1"]);
    e.ok(&["rbd", "create", "data/ns1/x", "--size", "1M"]);
    e.ok(&["rbd", "trash", "mv", "data/ns1/x"]);
    let xid = trash_id(&e, "data/ns1", "x");
    assert_eq!(e.run(&["rbd", "namespace", "rm", "data/ns1"]).code, 16);
    e.ok(&["rbd", "trash", "rm", &format!("data/ns1/{xid}")]);
    e.ok(&["rbd", "namespace", "rm", "data/ns1"]);

    // Bad input.
    e.fails(
        &["rbd", "trash", "mv", "data/nosuch"],
        2,
        "rbd: deferred delete error: (2) No such file or directory\n",
    );
    e.fails(
        &["rbd", "trash", "rm", "data/0123nosuch"],
        2,
        "rbd: remove error: (2) No such file or directory\n",
    );
    e.fails(
        &[
            "rbd",
            "trash",
            "mv",
            "data/other",
            "--expires-at",
            "2001-01-01",
        ],
        22,
        "rbd: cannot use a date in the past as an expiration date\n",
    );
    let bad = e.run(&[
        "rbd",
        "trash",
        "mv",
        "data/other",
        "--expires-at",
        "soonish",
    ]);
    assert_eq!(bad.code, 22, "{}", bad.stderr);
    assert!(
        bad.stderr.starts_with("rbd: invalid date 'soonish': "),
        "{}",
        bad.stderr
    );
    e.fails(
        &["rbd", "trash", "purge", "data", "--threshold", "0.5"],
        95,
        "rbd: --threshold is not supported by Quarry; use --expired-before\n",
    );
    e.fails(
        &["rbd", "trash", "rm", "-p", "data"],
        22,
        "rbd: image id was not specified\n",
    );
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "other\nvm1\n");

    // rbd_move_to_trash_on_remove: `rbd rm` trashes, with the configured deferment.
    let conf = e.path("ceph.conf");
    let orig = std::fs::read_to_string(&conf).expect("read conf");
    std::fs::write(
        &conf,
        format!("{orig}rbd_move_to_trash_on_remove = true\nrbd_move_to_trash_on_remove_expire_seconds = 3600\n"),
    )
    .expect("write conf");
    e.ok(&["rbd", "rm", "--no-progress", "data/other"]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "vm1\n");
    let oid = trash_id(&e, "data", "other");
    assert_eq!(
        e.run(&["rbd", "trash", "rm", &format!("data/{oid}")]).code,
        1,
        "still protected for an hour"
    );
    std::fs::write(&conf, orig).expect("restore conf");
    e.ok(&["rbd", "trash", "rm", "--force", &format!("data/{oid}")]);
}

/// cryptsetup on an exported raw image: its `luksDump`, and whether
/// `passphrase` opens a key slot (`--test-passphrase` needs no device
/// mapper).
fn cryptsetup_check(raw: &Path, passphrase: &[u8], dir: &Path) -> (String, bool) {
    let cs = ["/usr/sbin/cryptsetup", "/sbin/cryptsetup"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("cryptsetup (Debian package cryptsetup-bin) is needed by this test");
    let dump = Command::new(cs)
        .arg("luksDump")
        .arg(raw)
        .output()
        .expect("cryptsetup luksDump");
    let key = dir.join("cs-key");
    std::fs::write(&key, passphrase).expect("key file");
    let opens = Command::new(cs)
        .args(["open", "--test-passphrase", "--key-file"])
        .arg(&key)
        .arg(raw)
        .status()
        .expect("cryptsetup open")
        .success();
    (String::from_utf8_lossy(&dump.stdout).into_owned(), opens)
}

#[test]
fn encryption_format_writes_headers_cryptsetup_opens() {
    let e = Env::new();
    let pass = e.path("passphrase.txt");
    // One trailing newline is not part of the passphrase, as in Ceph.
    std::fs::write(&pass, "s3cret pass\n").expect("passphrase");
    let p = pass.to_str().expect("utf8");
    for (luks, alg, version, bits) in [
        ("luks1", None, "Version:       \t1", "MK bits:       \t512"),
        ("luks2", Some("aes-128"), "Version:       \t2", "256 bits"),
    ] {
        let spec = format!("data/{luks}");
        e.ok(&["rbd", "create", "--size", "32M", &spec]);
        let mut args = vec!["rbd", "encryption", "format", &spec, luks, p];
        if let Some(a) = alg {
            args.extend(["--cipher-alg", a]);
        }
        e.ok(&args);
        let raw = e.path(&format!("{luks}.raw"));
        export_bytes(&e, &spec, &format!("{luks}.raw"));
        let (dump, opens) = cryptsetup_check(&raw, b"s3cret pass", e.dir.path());
        assert!(dump.contains(version), "{dump}");
        assert!(dump.contains("xts-plain64"), "{dump}");
        assert!(dump.contains(bits), "{dump}");
        assert!(opens, "cryptsetup refused the passphrase of {luks}");
        let (_, opens) = cryptsetup_check(&raw, b"s3cret pass\n", e.dir.path());
        assert!(!opens, "the newline became part of the {luks} passphrase");
    }
    e.ok(&["rbd", "create", "--size", "4M", "data/tiny"]);
    e.fails(
        &["rbd", "encryption", "format", "data/tiny", "luks1", p],
        28,
        "rbd: encryption format error: (28) No space left on device\nrbd: image is too small: encryption needs more than 4194304 bytes\n",
    );
    e.fails(
        &["rbd", "encryption", "format", "data/luks1", "luks3", p],
        22,
        "rbd: invalid encryption format: luks3 (luks1 or luks2)\n",
    );
    e.fails(
        &[
            "rbd",
            "encryption",
            "format",
            "data/luks1",
            "luks1",
            p,
            "--cipher-alg",
            "des",
        ],
        22,
        "rbd: invalid cipher algorithm: des (aes-128 or aes-256)\n",
    );
    let o = e.run(&[
        "rbd",
        "encryption",
        "format",
        "data/luks1",
        "luks1",
        "/nonexistent",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("rbd: error reading passphrase file /nonexistent"),
        "{}",
        o.stderr
    );
}

#[test]
fn migration_moves_images_between_pools_and_aborts_back() {
    let e = Env::new();
    e.ok(&["ceph", "osd", "pool", "create", "fast"]);
    e.ok(&["rbd", "pool", "init", "fast"]);
    let src = e.path("src.raw");
    let data = pattern_file(&src);
    let s = src.to_str().expect("utf8");
    e.ok(&["rbd", "import", "--no-progress", s, "data/vm1"]);
    e.fails(
        &["rbd", "migration", "execute", "data/vm1"],
        22,
        "rbd: executing migration failed: (22) Invalid argument\n\
         rbd: invalid argument: image data/vm1 is not being migrated\n",
    );
    e.ok(&["rbd", "snap", "create", "data/vm1@s"]);
    e.ok(&["rbd", "snap", "protect", "data/vm1@s"]);
    e.ok(&["rbd", "clone", "data/vm1@s", "data/kid"]);
    e.fails(
        &["rbd", "migration", "prepare", "data/vm1", "fast/vm1"],
        16,
        "rbd: preparing migration failed: (16) Device or resource busy\n\
         rbd: image data/vm1 is busy: its snapshot s has 1 clone(s); flatten or remove them first\n",
    );
    e.ok(&["rbd", "rm", "--no-progress", "data/kid"]);
    e.ok(&["rbd", "snap", "unprotect", "data/vm1@s"]);
    e.ok(&["rbd", "snap", "rm", "--no-progress", "data/vm1@s"]);

    // Prepared: the source is hidden, the destination reads its data.
    e.ok(&[
        "rbd",
        "migration",
        "prepare",
        "data/vm1",
        "fast/vm1",
        "--object-size",
        "1M",
    ]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "");
    assert_eq!(e.ok(&["rbd", "ls", "fast"]).stdout, "vm1\n");
    assert_eq!(e.ok(&["rbd", "trash", "ls", "data"]).stdout, "");
    let v = e.json(&[
        "rbd", "trash", "ls", "--all", "--long", "--format", "json", "data",
    ]);
    assert_eq!(v[0]["source"], "MIGRATION", "{v}");
    let sid = v[0]["id"].as_str().expect("id").to_string();
    let st = e.ok(&["rbd", "status", "fast/vm1"]).stdout;
    assert!(
        st.contains(&format!("\tsource: data/vm1 ({sid})\n")) && st.contains("\tstate: prepared\n"),
        "{st}"
    );
    let j = e.json(&["rbd", "status", "--format", "json", "fast/vm1"]);
    assert_eq!(j["migration"]["dest_pool_name"], "fast", "{j}");
    assert_eq!(export_bytes(&e, "fast/vm1", "during.raw"), data);
    e.fails(
        &["rbd", "trash", "rm", &format!("data/{sid}")],
        16,
        "rbd: error: image is the source of a live migration\n\
         rbd: Use 'rbd migration commit' or 'rbd migration abort' on it instead.\n",
    );
    e.fails(
        &["rbd", "migration", "commit", "fast/vm1"],
        22,
        "rbd: committing migration failed: (22) Invalid argument\n\
         rbd: invalid argument: migration of data/vm1 to fast/vm1 is prepared: \
         run `rbd migration execute` first\n",
    );
    let o = e.run(&["rbd", "migration", "prepare", "data/vm1", "fast/again"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    // Removing either end would strand the other.
    e.fails(
        &["rbd", "rm", "--no-progress", "fast/vm1"],
        16,
        "rbd: error: image is being migrated\n\
         rbd: Use 'rbd migration abort' (or 'rbd migration commit') on it instead.\n",
    );

    // Executed (by the source's name), committed: one image, in the new pool.
    e.ok(&["rbd", "migration", "execute", "--no-progress", "data/vm1"]);
    assert!(e
        .ok(&["rbd", "status", "fast/vm1"])
        .stdout
        .contains("\tstate: executed\n"));
    e.ok(&["rbd", "migration", "commit", "--no-progress", "fast/vm1"]);
    assert!(!e
        .ok(&["rbd", "status", "fast/vm1"])
        .stdout
        .contains("Migration"));
    assert_eq!(e.ok(&["rbd", "trash", "ls", "--all", "data"]).stdout, "");
    let info = e.json(&["rbd", "info", "--format", "json", "fast/vm1"]);
    assert_eq!(info["order"], 20, "{info}");
    assert!(info.get("parent").is_none(), "{info}");
    assert_eq!(export_bytes(&e, "fast/vm1", "after.raw"), data);

    // Aborted (the destination renamed meanwhile): the destination goes,
    // the source is back as it was.
    e.ok(&["rbd", "migration", "prepare", "fast/vm1", "data/back0"]);
    e.ok(&["rbd", "rename", "data/back0", "data/back"]);
    // Another image took the source's name: refused before anything goes.
    e.ok(&["rbd", "create", "--size", "1M", "fast/vm1"]);
    e.fails(
        &["rbd", "migration", "abort", "--no-progress", "data/back"],
        17,
        "rbd: aborting migration failed: (17) File exists\n\
         rbd: another image named fast/vm1 (the source goes back under that name) already exists\n",
    );
    e.ok(&["rbd", "rm", "--no-progress", "fast/vm1"]);
    e.ok(&[
        "rbd",
        "resize",
        "--size",
        "1M",
        "--allow-shrink",
        "--no-progress",
        "data/back",
    ]);
    e.ok(&["rbd", "migration", "abort", "--no-progress", "data/back"]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "");
    assert_eq!(e.ok(&["rbd", "ls", "fast"]).stdout, "vm1\n");
    assert_eq!(export_bytes(&e, "fast/vm1", "aborted.raw"), data);
}

/// Consistency groups through `rbd group`: members, a group snapshot that
/// every member has (hidden from `rbd snap ls` but for `--all`, kept by
/// `snap purge`), rollback of every member, rename, a member leaving with
/// its snapshot, and removal of the group freeing its images.
/// Write `data` at `off` of image `spec` (an `rbd diff v1` stream with one
/// write record, through `rbd import-diff`).
fn write_at(e: &Env, spec: &str, off: u64, data: &[u8]) {
    let size = e.json(&["rbd", "info", "--format", "json", spec])["size"]
        .as_u64()
        .expect("size");
    let mut d = b"rbd diff v1\n".to_vec();
    d.push(b's');
    d.extend_from_slice(&size.to_le_bytes());
    d.push(b'w');
    d.extend_from_slice(&off.to_le_bytes());
    d.extend_from_slice(&(data.len() as u64).to_le_bytes());
    d.extend_from_slice(data);
    d.push(b'e');
    let p = e.path("write.diff");
    std::fs::write(&p, d).expect("write diff");
    e.ok(&[
        "rbd",
        "import-diff",
        "--no-progress",
        p.to_str().expect("utf8"),
        spec,
    ]);
}

#[test]
fn migration_moves_snapshots_with_the_image() {
    const MIB: usize = 1 << 20;
    let e = Env::new();
    e.ok(&["ceph", "osd", "pool", "create", "fast"]);
    e.ok(&["rbd", "pool", "init", "fast"]);
    e.ok(&["rbd", "create", "--size", "8M", "data/vm"]);
    let mut want = vec![0u8; 8 * MIB];
    let put = |e: &Env, want: &mut Vec<u8>, off: usize, len: usize, b: u8| {
        write_at(e, "data/vm", off as u64, &vec![b; len]);
        want[off..off + len].fill(b);
    };
    put(&e, &mut want, 0, 6 * MIB, 1);
    e.ok(&["rbd", "snap", "create", "data/vm@one"]);
    let one = want.clone();
    put(&e, &mut want, 3 * MIB, 5 * MIB, 2);
    e.ok(&["rbd", "snap", "create", "data/vm@two"]);
    e.ok(&["rbd", "snap", "protect", "data/vm@two"]);
    let two = want.clone();
    put(&e, &mut want, MIB, 4096, 3);

    // Moved with smaller objects: the snapshots follow, readable at once.
    e.ok(&[
        "rbd",
        "migration",
        "prepare",
        "--object-size",
        "1M",
        "data/vm",
        "fast/vm",
    ]);
    let snaps = e.json(&["rbd", "snap", "ls", "--format", "json", "fast/vm"]);
    let names: Vec<(&str, &str)> = snaps
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name"),
                s["protected"].as_str().expect("protected"),
            )
        })
        .collect();
    assert_eq!(names, [("one", "false"), ("two", "true")], "{snaps}");
    assert_eq!(export_bytes(&e, "fast/vm@one", "p1.raw"), one);
    assert_eq!(export_bytes(&e, "fast/vm@two", "p2.raw"), two);
    assert_eq!(export_bytes(&e, "fast/vm", "ph.raw"), want);
    // A write copies its object up above the object's history.
    write_at(&e, "fast/vm", 3 * MIB as u64, &[4u8; 4096]);
    want[3 * MIB..3 * MIB + 4096].fill(4);
    e.ok(&["rbd", "snap", "create", "fast/vm@three"]);
    let three = want.clone();
    write_at(&e, "fast/vm", 7 * MIB as u64, &[5u8; 4096]);
    want[7 * MIB..7 * MIB + 4096].fill(5);
    assert_eq!(export_bytes(&e, "fast/vm@one", "w1.raw"), one);
    assert_eq!(export_bytes(&e, "fast/vm@two", "w2.raw"), two);
    assert_eq!(export_bytes(&e, "fast/vm@three", "w3.raw"), three);
    e.ok(&["rbd", "migration", "execute", "--no-progress", "fast/vm"]);
    e.ok(&["rbd", "migration", "commit", "--no-progress", "fast/vm"]);
    assert_eq!(e.ok(&["rbd", "ls", "data"]).stdout, "");
    assert_eq!(e.ok(&["rbd", "trash", "ls", "--all", "data"]).stdout, "");
    let info = e.ok(&["rbd", "info", "fast/vm"]).stdout;
    assert!(
        info.contains("order 20 (1 MiB objects)") && !info.contains("parent"),
        "{info}"
    );
    for (snap, bytes) in [("one", &one), ("two", &two), ("three", &three)] {
        assert_eq!(
            &export_bytes(&e, &format!("fast/vm@{snap}"), &format!("c-{snap}.raw")),
            bytes,
            "{snap}"
        );
    }
    assert_eq!(export_bytes(&e, "fast/vm", "ch.raw"), want);
    // The history is the image's own now: rollback works.
    e.ok(&["rbd", "snap", "rollback", "--no-progress", "fast/vm@one"]);
    assert_eq!(export_bytes(&e, "fast/vm", "rolled.raw"), one);

    // A VM disk cloned from a golden image, with a snapshot of its own:
    // the snapshot moves (as a full copy), the head stays a thin clone.
    e.ok(&["rbd", "create", "--size", "8M", "data/gold"]);
    write_at(&e, "data/gold", 0, &vec![8u8; 8 * MIB]);
    e.ok(&["rbd", "snap", "create", "data/gold@base"]);
    e.ok(&["rbd", "snap", "protect", "data/gold@base"]);
    e.ok(&["rbd", "clone", "data/gold@base", "data/c"]);
    write_at(&e, "data/c", 5 * MIB as u64, &[9u8; 4096]);
    e.ok(&["rbd", "snap", "create", "data/c@backup"]);
    let backup = export_bytes(&e, "data/c", "c1.raw");
    write_at(&e, "data/c", MIB as u64, &[10u8; 4096]);
    let c_head = export_bytes(&e, "data/c", "c2.raw");
    e.ok(&["rbd", "migration", "prepare", "data/c", "fast/c"]);
    e.ok(&["rbd", "migration", "execute", "--no-progress", "fast/c"]);
    e.ok(&["rbd", "migration", "commit", "--no-progress", "fast/c"]);
    assert_eq!(export_bytes(&e, "fast/c@backup", "c3.raw"), backup);
    assert_eq!(export_bytes(&e, "fast/c", "c4.raw"), c_head);
    let info = e.ok(&["rbd", "info", "fast/c"]).stdout;
    assert!(info.contains("parent: data/gold@base"), "{info}");
    assert_eq!(
        e.ok(&["rbd", "children", "data/gold@base"]).stdout,
        "fast/c\n"
    );

    // Without deep-flatten, a snapshot taken during the move and then
    // written past would still read the source: execute says so and keeps
    // the source rather than lose that snapshot's data.
    e.ok(&["rbd", "create", "--size", "8M", "data/b"]);
    write_at(&e, "data/b", 0, &vec![6u8; 8 * MIB]);
    e.ok(&["rbd", "snap", "create", "data/b@s"]);
    let b = export_bytes(&e, "data/b", "b.raw");
    e.ok(&[
        "rbd",
        "migration",
        "prepare",
        "--image-feature",
        "layering",
        "data/b",
        "fast/b",
    ]);
    e.ok(&["rbd", "snap", "create", "fast/b@d"]);
    write_at(&e, "fast/b", 6 * MIB as u64, &[7u8; 4096]);
    e.fails(
        &["rbd", "migration", "execute", "--no-progress", "fast/b"],
        16,
        "rbd: executing migration failed: (16) Device or resource busy\n\
         rbd: image fast/b is busy: snapshot(s) d of the destination still read data of the \
         source that could not be copied under them; the source is kept (remove those \
         snapshots and run execute again, or abort)\n",
    );
    e.fails(
        &["rbd", "migration", "commit", "--no-progress", "fast/b"],
        22,
        "rbd: committing migration failed: (22) Invalid argument\n\
         rbd: invalid argument: migration of data/b to fast/b is executing: \
         run `rbd migration execute` first\n",
    );
    assert_eq!(export_bytes(&e, "fast/b@d", "bd.raw"), b);
    assert_eq!(export_bytes(&e, "fast/b@s", "bs.raw"), b);
    e.ok(&["rbd", "migration", "abort", "--no-progress", "fast/b"]);
    assert_eq!(e.ok(&["rbd", "ls", "fast"]).stdout, "c\nvm\n");
    assert_eq!(export_bytes(&e, "data/b@s", "bs2.raw"), b);
    assert_eq!(export_bytes(&e, "data/b", "bh.raw"), b);
}

#[test]
fn groups_snapshot_and_roll_back_their_images_together() {
    let e = Env::new();
    let src = e.path("src.raw");
    let data = pattern_file(&src);
    let s = src.to_str().expect("utf8");
    e.ok(&["rbd", "import", "--no-progress", s, "data/os"]);
    e.ok(&["rbd", "import", "--no-progress", s, "data/db"]);
    e.ok(&["rbd", "group", "create", "data/g1"]);
    e.fails(
        &["rbd", "group", "create", "data/g1"],
        17,
        "rbd: create error: (17) File exists\n",
    );
    e.fails(
        &["rbd", "group", "create", "data/bad@x"],
        22,
        "rbd: snapshot name specified for a command that doesn't use it\n",
    );
    assert_eq!(e.ok(&["rbd", "group", "ls", "data"]).stdout, "g1\n");
    assert_eq!(
        e.json(&["rbd", "group", "ls", "--format", "json", "data"]),
        serde_json::json!(["g1"])
    );
    e.ok(&["rbd", "group", "image", "add", "data/g1", "data/os"]);
    e.ok(&["rbd", "group", "image", "add", "data/g1", "data/db"]);
    e.fails(
        &["rbd", "group", "image", "add", "data/g1", "data/db"],
        17,
        "rbd: add image error: (17) File exists\n",
    );
    assert_eq!(
        e.ok(&["rbd", "group", "image", "ls", "data/g1"]).stdout,
        "data/db \ndata/os \n"
    );
    e.fails(
        &["rbd", "rm", "--no-progress", "data/os"],
        31,
        "rbd: error: image belongs to a group\n\
         rbd: Remove the image from the group and try again.\n",
    );
    e.fails(
        &["rbd", "trash", "mv", "data/os"],
        31,
        "rbd: deferred delete error: (31) Too many links\n",
    );
    e.fails(
        &["rbd", "migration", "prepare", "data/os", "data/os2"],
        16,
        "rbd: preparing migration failed: (16) Device or resource busy\n\
         rbd: image data/os is busy: it belongs to a consistency group; \
         remove it from the group first\n",
    );

    e.ok(&["rbd", "group", "snap", "create", "data/g1@s1"]);
    e.fails(
        &["rbd", "group", "snap", "create", "data/g1@s1"],
        17,
        "rbd: failed to create group snapshot: (17) File exists\n",
    );
    e.fails(
        &["rbd", "group", "snap", "create", "data/g1"],
        22,
        "rbd: group snapshot name was not specified\n",
    );
    let ls = e.ok(&["rbd", "group", "snap", "ls", "data/g1"]).stdout;
    assert_eq!(ls, "NAME  STATUS  \ns1    complete\n", "{ls}");
    assert_eq!(
        e.json(&["rbd", "group", "snap", "ls", "--format", "json", "data/g1"]),
        serde_json::json!([{"snapshot": "s1", "state": "complete"}])
    );
    // The members' snapshots: in the group namespace, not the user's.
    assert_eq!(e.ok(&["rbd", "snap", "ls", "data/os"]).stdout, "");
    let all = e.ok(&["rbd", "snap", "ls", "--all", "data/os"]).stdout;
    assert!(
        all.contains(" .group.") && all.contains("NAMESPACE"),
        "{all}"
    );
    assert!(all.trim_end().ends_with("group"), "{all}");
    e.ok(&["rbd", "snap", "purge", "--no-progress", "data/os"]);
    assert_eq!(
        e.ok(&["rbd", "snap", "ls", "--all", "data/os"])
            .stdout
            .lines()
            .count(),
        2
    );

    // Both change; the group rolls back as one.
    for img in ["data/os", "data/db"] {
        e.ok(&[
            "rbd",
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-total",
            "1M",
            "--io-pattern",
            "seq",
            img,
        ]);
        assert_ne!(export_bytes(&e, img, "changed.raw"), data);
    }
    e.ok(&[
        "rbd",
        "group",
        "snap",
        "rollback",
        "--no-progress",
        "data/g1@s1",
    ]);
    assert_eq!(export_bytes(&e, "data/os", "os.raw"), data);
    assert_eq!(export_bytes(&e, "data/db", "db.raw"), data);

    e.ok(&["rbd", "group", "snap", "rename", "data/g1@s1", "before"]);
    e.ok(&["rbd", "group", "rename", "data/g1", "vm"]);
    assert_eq!(e.ok(&["rbd", "group", "ls", "data"]).stdout, "vm\n");
    e.fails(
        &["rbd", "group", "snap", "rm", "data/g1@before"],
        2,
        "rbd: failed to remove group snapshot: (2) No such file or directory\n",
    );

    // A member leaves: its snapshot of the group's goes with it, the group
    // snapshot is incomplete and cannot be rolled back to.
    e.ok(&["rbd", "group", "image", "rm", "data/vm", "data/db"]);
    assert_eq!(e.ok(&["rbd", "snap", "ls", "--all", "data/db"]).stdout, "");
    assert_eq!(
        e.ok(&["rbd", "group", "image", "ls", "data/vm"]).stdout,
        "data/os \n"
    );
    let ls = e.ok(&["rbd", "group", "snap", "ls", "data/vm"]).stdout;
    assert!(ls.contains("before  incomplete"), "{ls}");
    let o = e.run(&[
        "rbd",
        "group",
        "snap",
        "rollback",
        "--no-progress",
        "data/vm@before",
    ]);
    assert_eq!(o.code, 22, "{}", o.stderr);
    e.ok(&["rbd", "rm", "--no-progress", "data/db"]);

    // Removing the group removes its snapshots and frees its images.
    e.ok(&["rbd", "group", "rm", "data/vm"]);
    assert_eq!(e.ok(&["rbd", "group", "ls", "data"]).stdout, "");
    assert_eq!(e.ok(&["rbd", "snap", "ls", "--all", "data/os"]).stdout, "");
    e.ok(&["rbd", "rm", "--no-progress", "data/os"]);
    e.fails(
        &["rbd", "group", "rm", "data/vm"],
        2,
        "rbd: remove error: (2) No such file or directory\n",
    );

    // An image linked to a group that no longer exists (a `group rm`
    // racing a `group image add`) is not held by it.
    e.ok(&["rbd", "create", "--size", "1M", "data/orphan"]);
    e.ok(&["rbd", "group", "create", "data/gone"]);
    e.ok(&["rbd", "group", "image", "add", "data/gone", "data/orphan"]);
    let keys = e
        .ok(&["rados", "-p", "data", "listomapkeys", "rbd_group_directory"])
        .stdout;
    let gid = keys
        .lines()
        .find_map(|k| k.strip_prefix("id_"))
        .expect("group id")
        .to_string();
    e.ok(&[
        "rados",
        "-p",
        "data",
        "rm",
        &format!("rbd_group_header.{gid}"),
    ]);
    // Nor does the stale link keep it out of a live migration or of
    // another group: both clear it.
    e.ok(&["rbd", "migration", "prepare", "data/orphan", "data/moved"]);
    e.ok(&["rbd", "migration", "abort", "--no-progress", "data/moved"]);
    e.ok(&["rbd", "group", "create", "data/next"]);
    e.ok(&["rbd", "group", "image", "add", "data/next", "data/orphan"]);
    assert_eq!(
        e.ok(&["rbd", "group", "image", "ls", "data/next"]).stdout,
        "data/orphan \n"
    );
    e.fails(
        &["rbd", "rm", "--no-progress", "data/orphan"],
        31,
        "rbd: error: image belongs to a group\n\
         rbd: Remove the image from the group and try again.\n",
    );
    e.ok(&["rbd", "group", "image", "rm", "data/next", "data/orphan"]);
    e.ok(&["rbd", "rm", "--no-progress", "data/orphan"]);
}

/// `rbd object-map check|rebuild`: a lost map (the image reads every
/// object, `rbd info` says so) and a stale one (it calls written objects
/// absent, so a fresh handle would read zeros there) are found by `check`
/// and made right by `rebuild`; the data reads back byte for byte.
#[test]
fn object_map_check_finds_and_rebuild_repairs_a_lost_or_stale_map() {
    let e = Env::new();
    let src = e.path("src.raw");
    let data = pattern_file(&src);
    let s = src.to_str().expect("utf8");
    e.ok(&["rbd", "import", "--no-progress", s, "data/vm"]);
    e.ok(&["rbd", "object-map", "check", "--no-progress", "data/vm"]);
    let id = e.json(&["rbd", "info", "--format", "json", "data/vm"])["id"]
        .as_str()
        .expect("id")
        .to_string();
    let map = format!("rbd_object_map.{id}");

    // Lost.
    e.ok(&["rados", "-p", "data", "rm", &map]);
    let info = e.ok(&["rbd", "info", "data/vm"]).stdout;
    assert!(
        info.contains("flags: object map invalid, fast diff invalid"),
        "{info}"
    );
    e.fails(
        &["rbd", "object-map", "check", "--no-progress", "data/vm"],
        22,
        "rbd: object map is missing or damaged; run 'rbd object-map rebuild data/vm'\n",
    );
    e.ok(&["rbd", "object-map", "rebuild", "--no-progress", "data/vm"]);
    let info = e.ok(&["rbd", "info", "data/vm"]).stdout;
    assert!(!info.contains("invalid"), "{info}");
    e.ok(&["rbd", "object-map", "check", "--no-progress", "data/vm"]);
    assert_eq!(export_bytes(&e, "data/vm", "after-lost.raw"), data);

    // Stale: every object called absent (a map from before the writes).
    let zeros = e.path("zeros.map");
    std::fs::write(&zeros, [0u8; 2]).expect("write map");
    e.ok(&[
        "rados",
        "-p",
        "data",
        "put",
        &map,
        zeros.to_str().expect("utf8"),
    ]);
    e.fails(
        &["rbd", "object-map", "check", "--no-progress", "data/vm"],
        22,
        "rbd: object map is invalid: 1 existing object(s) marked absent; \
         run 'rbd object-map rebuild data/vm'\n",
    );
    let stale = export_bytes(&e, "data/vm", "stale.raw");
    assert!(
        stale[..1 << 20].iter().all(|&b| b == 0),
        "the stale map hides object 0"
    );
    e.ok(&["rbd", "object-map", "rebuild", "--no-progress", "data/vm"]);
    e.ok(&["rbd", "object-map", "check", "--no-progress", "data/vm"]);
    assert_eq!(export_bytes(&e, "data/vm", "after-stale.raw"), data);

    // Without the feature, and for a snapshot spec: refused.
    e.ok(&[
        "rbd",
        "create",
        "--size",
        "8M",
        "--image-feature",
        "layering",
        "data/plain",
    ]);
    let o = e.run(&[
        "rbd",
        "object-map",
        "rebuild",
        "--no-progress",
        "data/plain",
    ]);
    assert_eq!(o.code, 22, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("rbd: rebuilding object map failed: (22) Invalid argument\n"),
        "{}",
        o.stderr
    );
    e.fails(
        &["rbd", "object-map", "rebuild", "data/vm@s"],
        22,
        "rbd: snapshot name specified for a command that doesn't use it\n",
    );
}
