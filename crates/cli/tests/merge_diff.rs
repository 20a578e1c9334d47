//! `rbd merge-diff` end to end, on the embedded backend: two incremental
//! diffs of a real image (overlapping and separate writes, discards, a
//! shrink and a growth between the snapshots) merged into one that,
//! applied after the from-scratch diff, reproduces the image byte for byte;
//! the merged stream's framing; Ceph's texts and exit codes for bad input.
//! Where Ceph's own `rbd` is installed (/usr/bin/rbd), its `merge-diff` runs
//! on the same inputs and must write the same bytes and the same errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_quarry");
const CEPH_RBD: &str = "/usr/bin/rbd";
const M: u64 = 1 << 20;

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

struct Env {
    dir: tempfile::TempDir,
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
        // For Ceph's tool: a conf with nothing in it, so it prints no
        // warnings about a missing one (merge-diff reads no option).
        std::fs::write(dir.path().join("empty.conf"), "[global]\n").expect("write conf");
        let e = Env { dir };
        e.ok(&["ceph", "osd", "pool", "create", "data"]);
        e.ok(&["rbd", "pool", "init", "data"]);
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf8 path").to_string()
    }

    fn run_bin(&self, bin: &str, conf: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
        use std::io::Write;
        let mut c = Command::new(bin);
        c.args(args)
            .env("CEPH_CONF", self.path(conf))
            // Never the machine's ~/.ceph: HOME is the test's directory.
            .env("HOME", self.dir.path())
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().expect("spawn");
        // Fed from another thread: the command writes its stdout while it
        // reads, and would block on a full pipe nobody reads.
        let feeder = stdin.map(|data| {
            let mut si = ch.stdin.take().expect("stdin");
            let data = data.to_vec();
            std::thread::spawn(move || si.write_all(&data))
        });
        let o = ch.wait_with_output().expect("wait");
        if let Some(f) = feeder {
            f.join().expect("feeder thread").expect("feed stdin");
        }
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_bin(BIN, "ceph.conf", args, None)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "{args:?} failed: stderr={}", o.stderr);
        o
    }

    fn export(&self, spec: &str) -> Vec<u8> {
        self.ok(&["rbd", "export", "--no-progress", spec, "-"])
            .stdout
    }
}

/// Whether Ceph's rbd is here; says so on stderr when it is not.
fn ceph_rbd() -> bool {
    let here = Path::new(CEPH_RBD).exists();
    if !here {
        eprintln!(
            "skipped: Ceph's rbd not installed ({CEPH_RBD}): no comparison with Ceph's merge-diff"
        );
    }
    here
}

/// `rbd diff v1` records, for writing images and for bad inputs.
enum Rec<'a> {
    From(&'a str),
    To(&'a str),
    Size(u64),
    Write(u64, &'a [u8]),
    Zero(u64, u64),
    End,
}

fn stream(banner: &[u8], recs: &[Rec]) -> Vec<u8> {
    let mut v = banner.to_vec();
    for r in recs {
        match r {
            Rec::From(n) | Rec::To(n) => {
                v.push(if matches!(r, Rec::From(_)) {
                    b'f'
                } else {
                    b't'
                });
                v.extend_from_slice(&(n.len() as u32).to_le_bytes());
                v.extend_from_slice(n.as_bytes());
            }
            Rec::Size(s) => {
                v.push(b's');
                v.extend_from_slice(&s.to_le_bytes());
            }
            Rec::Write(off, data) => {
                v.push(b'w');
                v.extend_from_slice(&off.to_le_bytes());
                v.extend_from_slice(&(data.len() as u64).to_le_bytes());
                v.extend_from_slice(data);
            }
            Rec::Zero(off, len) => {
                v.push(b'z');
                v.extend_from_slice(&off.to_le_bytes());
                v.extend_from_slice(&len.to_le_bytes());
            }
            Rec::End => v.push(b'e'),
        }
    }
    v
}

fn v1(recs: &[Rec]) -> Vec<u8> {
    stream(b"rbd diff v1\n", recs)
}

/// A parsed merged stream: (from, to, size, [(tag, off, len)]).
type Parsed = (Option<String>, Option<String>, u64, Vec<(u8, u64, u64)>);

fn parse(b: &[u8]) -> Parsed {
    assert_eq!(&b[..12], b"rbd diff v1\n");
    let mut i = 12;
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let (mut from, mut to, mut size, mut ext) = (None, None, 0, Vec::new());
    loop {
        let tag = b[i];
        i += 1;
        match tag {
            b'f' | b't' => {
                let n = u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as usize;
                let name = String::from_utf8(b[i + 4..i + 4 + n].to_vec()).expect("utf8");
                i += 4 + n;
                if tag == b'f' {
                    from = Some(name);
                } else {
                    to = Some(name);
                }
            }
            b's' => {
                size = u64_at(i);
                i += 8;
            }
            b'w' | b'z' => {
                let (off, len) = (u64_at(i), u64_at(i + 8));
                i += 16;
                if tag == b'w' {
                    i += len as usize;
                }
                ext.push((tag, off, len));
            }
            b'e' => break,
            t => panic!("unexpected tag {t:#x} at {}", i - 1),
        }
    }
    assert_eq!(i, b.len(), "bytes after the end record");
    (from, to, size, ext)
}

/// The image as the test models it, beside the real one.
struct Model {
    data: Vec<u8>,
}

impl Model {
    fn write(&mut self, e: &Env, img: &str, off: u64, data: &[u8]) {
        self.apply(e, img, &[Rec::Write(off, data)]);
        self.data[off as usize..off as usize + data.len()].copy_from_slice(data);
    }

    fn discard(&mut self, e: &Env, img: &str, off: u64, len: u64) {
        self.apply(e, img, &[Rec::Zero(off, len)]);
        self.data[off as usize..(off + len) as usize].fill(0);
    }

    fn resize(&mut self, e: &Env, img: &str, size: u64) {
        e.ok(&[
            "rbd",
            "resize",
            "--no-progress",
            "--allow-shrink",
            img,
            "--size",
            &format!("{}K", size / 1024),
        ]);
        self.data.resize(size as usize, 0);
    }

    /// Writes and discards go through import-diff of a stream without
    /// snapshot names (the CLI has no plain write command).
    fn apply(&self, e: &Env, img: &str, recs: &[Rec]) {
        let mut all = vec![Rec::Size(self.data.len() as u64)];
        for r in recs {
            all.push(match r {
                Rec::Write(o, d) => Rec::Write(*o, d),
                Rec::Zero(o, l) => Rec::Zero(*o, *l),
                _ => unreachable!("writes only"),
            });
        }
        all.push(Rec::End);
        let f = e.path("write.diff");
        std::fs::write(&f, v1(&all)).expect("write diff");
        e.ok(&[
            "rbd",
            "import-diff",
            "--no-progress",
            &e.p("write.diff"),
            img,
        ]);
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

#[test]
fn merged_diff_reproduces_the_image_and_matches_ceph() {
    let e = Env::new();
    let img = "data/a";
    e.ok(&["rbd", "create", img, "--size", "8M"]);
    let mut m = Model {
        data: vec![0; 8 * M as usize],
    };
    // Snapshot 1.
    m.write(&e, img, 0, &pattern(M as usize, 1));
    m.write(&e, img, 3 * M, &pattern(64 << 10, 2));
    m.write(&e, img, 6 * M + 100, &pattern(5000, 3));
    e.ok(&["rbd", "snap", "create", &format!("{img}@s1")]);
    let s1 = m.data.clone();
    // Snapshot 2: an overlapping and a separate write, a discard, a shrink
    // that cuts the last write in two.
    m.write(&e, img, 512 << 10, &pattern(M as usize, 4));
    m.write(&e, img, 5 * M, &pattern(8 << 10, 5));
    m.discard(&e, img, 3 * M + (16 << 10), 32 << 10);
    m.resize(&e, img, 6 * M + 2048);
    e.ok(&["rbd", "snap", "create", &format!("{img}@s2")]);
    let s2 = m.data.clone();
    // Snapshot 3: a write across one of the previous, growth, a write in
    // the grown part, one in the part the shrink had cut, a discard at 0.
    m.write(&e, img, M - 4096, &pattern(8192, 6));
    m.resize(&e, img, 10 * M);
    m.write(&e, img, 9 * M, &pattern(4096, 7));
    m.write(&e, img, 6 * M, &pattern(1024, 8));
    m.discard(&e, img, 0, 64 << 10);
    e.ok(&["rbd", "snap", "create", &format!("{img}@s3")]);
    let s3 = m.data.clone();
    assert_eq!(
        e.export(&format!("{img}@s1")),
        s1,
        "the image is not the model at s1"
    );
    assert_eq!(
        e.export(&format!("{img}@s2")),
        s2,
        "the image is not the model at s2"
    );
    assert_eq!(
        e.export(&format!("{img}@s3")),
        s3,
        "the image is not the model at s3"
    );

    let (d01, d12, d23) = (e.p("0-1.diff"), e.p("1-2.diff"), e.p("2-3.diff"));
    e.ok(&[
        "rbd",
        "export-diff",
        "--no-progress",
        &format!("{img}@s1"),
        &d01,
    ]);
    for (from, to, path) in [("s1", "s2", &d12), ("s2", "s3", &d23)] {
        e.ok(&[
            "rbd",
            "export-diff",
            "--no-progress",
            "--from-snap",
            from,
            &format!("{img}@{to}"),
            path,
        ]);
    }

    let m13 = e.p("1-3.diff");
    let o = e.ok(&["rbd", "merge-diff", "--no-progress", &d12, &d23, &m13]);
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", o.stderr);
    let merged = std::fs::read(&m13).expect("read merged");
    let (from, to, size, ext) = parse(&merged);
    assert_eq!(
        (from.as_deref(), to.as_deref(), size),
        (Some("s1"), Some("s3"), 10 * M)
    );
    // Sorted, not overlapping, within the end size.
    for w in ext.windows(2) {
        assert!(w[0].1 + w[0].2 <= w[1].1, "extents out of order: {w:?}");
    }
    assert!(
        ext.iter().all(|&(_, off, len)| off + len <= size),
        "{ext:?}"
    );
    // The growth from s2's size to s3's is covered (zero or written): s1
    // had data there that s3 does not.
    let covered: u64 = ext
        .iter()
        .map(|&(_, off, len)| {
            (off + len)
                .min(10 * M)
                .saturating_sub(off.max(6 * M + 2048))
        })
        .sum();
    assert_eq!(covered, 10 * M - (6 * M + 2048), "{ext:?}");

    // From-scratch diff, then the merged one, onto a fresh image.
    e.ok(&["rbd", "create", "data/b", "--size", "1M"]);
    e.ok(&["rbd", "import-diff", "--no-progress", &d01, "data/b"]);
    e.ok(&["rbd", "import-diff", "--no-progress", &m13, "data/b"]);
    let snaps = e
        .ok(&["rbd", "snap", "ls", "--format", "json", "data/b"])
        .stdout;
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&snaps)
        .expect("json")
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["s1", "s3"]);
    assert!(
        e.export("data/b@s1") == s1,
        "data/b@s1 differs from data/a@s1"
    );
    assert!(
        e.export("data/b@s3") == s3,
        "data/b@s3 differs from data/a@s3"
    );
    assert!(e.export("data/b") == s3, "data/b differs from data/a@s3");

    // The first diff from stdin, the output to stdout, the output named by
    // --path; the from-scratch diff merged with the next (no `f` record).
    let o = e.run_bin(
        BIN,
        "ceph.conf",
        &["rbd", "merge-diff", "--no-progress", "-", &d12, "-"],
        Some(&std::fs::read(&d01).expect("read")),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let m02 = o.stdout;
    let (from, to, size, _) = parse(&m02);
    assert_eq!(
        (from, to.as_deref(), size),
        (None, Some("s2"), 6 * M + 2048)
    );
    let m02_path = e.p("0-2.diff");
    e.ok(&["rbd", "merge-diff", &d01, &d12, "--path", &m02_path]);
    assert!(
        std::fs::read(&m02_path).expect("read") == m02,
        "--path wrote other bytes"
    );
    e.ok(&["rbd", "create", "data/c", "--size", "1M"]);
    e.ok(&["rbd", "import-diff", "--no-progress", &m02_path, "data/c"]);
    assert!(
        e.export("data/c@s2") == s2,
        "data/c@s2 differs from data/a@s2"
    );

    // All three in one: (0→2) + (2→3) = the whole image at s3.
    let m03 = e.p("0-3.diff");
    e.ok(&["rbd", "merge-diff", &m02_path, &d23, &m03]);
    e.ok(&["rbd", "create", "data/d", "--size", "1M"]);
    e.ok(&["rbd", "import-diff", "--no-progress", &m03, "data/d"]);
    assert!(
        e.export("data/d@s3") == s3,
        "data/d@s3 differs from data/a@s3"
    );

    if ceph_rbd() {
        for (a, b, ours) in [(&d12, &d23, &merged), (&d01, &d12, &m02)] {
            let out = e.p("ceph-merged.diff");
            let _ = std::fs::remove_file(&out);
            let o = e.run_bin(
                CEPH_RBD,
                "empty.conf",
                &["merge-diff", "--no-progress", a, b, &out],
                None,
            );
            assert_eq!(o.code, 0, "Ceph's merge-diff failed: {}", o.stderr);
            let theirs = std::fs::read(&out).expect("read Ceph's output");
            assert!(
                &theirs == ours,
                "merge-diff {a} {b}: Ceph wrote {} bytes, Quarry {}; Ceph's records {:?}, Quarry's {:?}",
                theirs.len(),
                ours.len(),
                parse(&theirs).3,
                parse(ours).3
            );
        }
    }
}

/// Ceph's framing quirks, on small hand-made diffs: the second diff's
/// records whole, the first's cut around them, the first's beyond the end
/// size dropped, the growth zeroed; no coalescing.
#[test]
fn merge_cuts_the_first_diff_around_the_second() {
    let e = Env::new();
    let a = v1(&[
        Rec::From("s1"),
        Rec::To("s2"),
        Rec::Size(100),
        Rec::Write(0, b"AAAAAAAAAA"),
        Rec::Zero(20, 10),
        Rec::Write(40, &[b'B'; 30]),
        Rec::Zero(80, 20),
        Rec::End,
    ]);
    let shrink = v1(&[
        Rec::From("s2"),
        Rec::To("s3"),
        Rec::Size(60),
        Rec::Write(5, b"CCCCCCCCCC"),
        Rec::Write(25, &[b'D'; 20]),
        Rec::Zero(50, 5),
        Rec::End,
    ]);
    let grow = v1(&[
        Rec::From("s2"),
        Rec::To("s3"),
        Rec::Size(200),
        Rec::Write(5, b"CCCCCCCCCC"),
        Rec::Write(150, b"EEEEEEEEEE"),
        Rec::End,
    ]);
    for (n, b) in [("a", &a), ("shrink", &shrink), ("grow", &grow)] {
        std::fs::write(e.path(n), b).expect("write");
    }
    e.ok(&["rbd", "merge-diff", &e.p("a"), &e.p("shrink"), &e.p("m1")]);
    let want = v1(&[
        Rec::From("s1"),
        Rec::To("s3"),
        Rec::Size(60),
        Rec::Write(0, b"AAAAA"),
        Rec::Write(5, b"CCCCCCCCCC"),
        Rec::Zero(20, 5),
        Rec::Write(25, &[b'D'; 20]),
        Rec::Write(45, b"BBBBB"),
        Rec::Zero(50, 5),
        Rec::Write(55, b"BBBBB"),
        Rec::End,
    ]);
    assert_eq!(std::fs::read(e.path("m1")).expect("read"), want);
    e.ok(&["rbd", "merge-diff", &e.p("a"), &e.p("grow"), &e.p("m2")]);
    let want = v1(&[
        Rec::From("s1"),
        Rec::To("s3"),
        Rec::Size(200),
        Rec::Write(0, b"AAAAA"),
        Rec::Write(5, b"CCCCCCCCCC"),
        Rec::Zero(20, 10),
        Rec::Write(40, &[b'B'; 30]),
        Rec::Zero(80, 20),
        Rec::Zero(100, 50),
        Rec::Write(150, b"EEEEEEEEEE"),
        Rec::Zero(160, 40),
        Rec::End,
    ]);
    assert_eq!(std::fs::read(e.path("m2")).expect("read"), want);
    if ceph_rbd() {
        for (second, ours) in [("shrink", "m1"), ("grow", "m2")] {
            let o = e.run_bin(
                CEPH_RBD,
                "empty.conf",
                &["merge-diff", &e.p("a"), &e.p(second), &e.p("ceph-out")],
                None,
            );
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert_eq!(
                std::fs::read(e.path("ceph-out")).expect("read"),
                std::fs::read(e.path(ours)).expect("read"),
                "Ceph merged a + {second} otherwise"
            );
            std::fs::remove_file(e.path("ceph-out")).expect("rm");
        }
    }
}

#[test]
fn merge_diff_refuses_bad_input_as_ceph_does() {
    let e = Env::new();
    let good1 = v1(&[
        Rec::From("s1"),
        Rec::To("s2"),
        Rec::Size(100),
        Rec::Write(0, b"0123456789"),
        Rec::End,
    ]);
    let good2 = v1(&[
        Rec::From("s2"),
        Rec::To("s3"),
        Rec::Size(100),
        Rec::Write(50, b"abcdefghij"),
        Rec::End,
    ]);
    let other = v1(&[Rec::From("sX"), Rec::To("s3"), Rec::Size(100), Rec::End]);
    // Ceph's `rbd export-diff --export-format 2`: another banner, then
    // tag + le64 length + payload records.
    let mut v2 = b"rbd diff v2\n".to_vec();
    v2.push(b'f');
    v2.extend_from_slice(&6u64.to_le_bytes());
    v2.extend_from_slice(&2u32.to_le_bytes());
    v2.extend_from_slice(b"s2");
    v2.push(b'e');
    let mut truncated = good2.clone();
    truncated.truncate(good2.len() - 4); // inside the data of the write
    let unknown_tag = v1(&[Rec::From("s2"), Rec::Size(100)])
        .into_iter()
        .chain([b'q'])
        .collect::<Vec<u8>>();
    let out_of_order = v1(&[
        Rec::From("s2"),
        Rec::Size(100),
        Rec::Write(50, b"xx"),
        Rec::Write(10, b"yy"),
        Rec::End,
    ]);
    let beyond_own_size = v1(&[
        Rec::To("s2"),
        Rec::Size(100),
        Rec::Write(150, b"zz"),
        Rec::End,
    ]);
    let grown = v1(&[Rec::From("s2"), Rec::Size(120), Rec::End]);
    for (n, b) in [
        ("good1", &good1),
        ("good2", &good2),
        ("other", &other),
        ("v2", &v2),
        ("truncated", &truncated),
        ("unknown", &unknown_tag),
        ("order", &out_of_order),
        ("banner", &b"not a diff at all".to_vec()),
        ("beyond", &beyond_own_size),
        ("grown", &grown),
    ] {
        std::fs::write(e.path(n), b).expect("write");
    }
    let out = e.p("out");
    let missing = e.p("missing");
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec![e.p("v2"), e.p("good2"), out.clone()],
            22,
            "invalid banner 'rbd diff v2\n', expected 'rbd diff v1\n'\n\
             rbd: failed to parse first diff header\nrbd: merge-diff error\n"
                .into(),
        ),
        (
            vec![e.p("good1"), e.p("v2"), out.clone()],
            22,
            "invalid banner 'rbd diff v2\n', expected 'rbd diff v1\n'\n\
             rbd: failed to parse second diff header\nrbd: merge-diff error\n"
                .into(),
        ),
        (
            vec![e.p("banner"), e.p("good2"), out.clone()],
            22,
            "invalid banner 'not a diff a', expected 'rbd diff v1\n'\n\
             rbd: failed to parse first diff header\nrbd: merge-diff error\n"
                .into(),
        ),
        (
            vec![e.p("good1"), e.p("truncated"), out.clone()],
            33,
            "rbd: failed to merge diff chunk\nrbd: merge-diff error\n".into(),
        ),
        (
            vec![e.p("good1"), e.p("unknown"), out.clone()],
            95,
            "rbd: failed to read second diff data chunk header\nrbd: merge-diff error\n".into(),
        ),
        (
            vec![e.p("good1"), e.p("order"), out.clone()],
            95,
            "rbd: out-of-order offset from second diff (52 > 10)\nrbd: merge-diff error\n".into(),
        ),
        (
            vec![e.p("good1"), e.p("other"), out.clone()],
            22,
            "The first TO snapshot must be equal with the second FROM snapshot, aborting\n\
             rbd: merge-diff error\n"
                .into(),
        ),
        (
            vec![missing.clone(), e.p("good2"), out.clone()],
            2,
            format!("rbd: error opening {missing}\nrbd: merge-diff error\n"),
        ),
        (
            vec![e.p("good1"), missing.clone(), out.clone()],
            2,
            format!("rbd: error opening {missing}\nrbd: merge-diff error\n"),
        ),
        (
            vec![e.p("good1"), "-".into(), out.clone()],
            2,
            "rbd: error opening -\nrbd: merge-diff error\n".into(),
        ),
        (
            vec![e.p("good1"), e.p("good2"), e.p("good1")],
            17,
            format!(
                "rbd: error create {}\nrbd: merge-diff error\n",
                e.p("good1")
            ),
        ),
        (
            vec![e.p("good1"), e.p("good2")],
            22,
            "rbd: path was not specified\n".into(),
        ),
        (
            vec![e.p("good1")],
            22,
            "rbd: second diff was not specified\n".into(),
        ),
        (vec![], 22, "rbd: first diff was not specified\n".into()),
        (
            vec![e.p("good1"), e.p("good2"), out.clone(), "extra".into()],
            1,
            "rbd: too many arguments\n".into(),
        ),
    ];
    let ceph = ceph_rbd();
    for (args, code, stderr) in &cases {
        let mut argv = vec!["rbd", "merge-diff", "--no-progress"];
        argv.extend(args.iter().map(String::as_str));
        let o = e.run(&argv);
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (*code, stderr.as_str()),
            "{args:?}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(
            !e.path("out").exists(),
            "{args:?}: a failed merge left its output"
        );
        if ceph {
            let c = e.run_bin(CEPH_RBD, "empty.conf", &argv[1..], None);
            assert_eq!(
                (c.code, c.stderr.as_str()),
                (*code, stderr.as_str()),
                "Ceph's rbd {args:?}"
            );
            assert!(
                !e.path("out").exists(),
                "Ceph's rbd {args:?} left its output"
            );
        }
    }
    // Inputs must be diffs that Ceph's tool accepts (the good pair merges).
    e.ok(&["rbd", "merge-diff", &e.p("good1"), &e.p("good2"), &out]);
    std::fs::remove_file(&out).expect("rm");

    // A record of the first diff beyond its own size, the image not
    // shrinking: Ceph's tool dies on an assertion; Quarry refuses cleanly.
    let o = e.run(&["rbd", "merge-diff", &e.p("beyond"), &e.p("grown"), &out]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            95,
            "rbd: first diff has an extent at offset 150 beyond its image size 100\n\
             rbd: merge-diff error\n"
        )
    );
    assert!(!e.path("out").exists(), "a failed merge left its output");
}
