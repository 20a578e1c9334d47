//! Debian's unmodified qemu-img / qemu-io (7.2, block-rbd.so) load Quarry's
//! library under LD_LIBRARY_PATH and work against the embedded store. The
//! tools must be installed: a missing tool fails these tests.

mod common;

use common::Env;

fn qemu_img(env: &Env, args: &[&str]) -> (bool, String, String) {
    let bin = common::require("qemu-img");
    env.run(env.cmd(bin).args(args))
}

fn qemu_io(env: &Env, args: &[&str]) -> (bool, String, String) {
    let bin = common::require("qemu-io");
    env.run(env.cmd(bin).args(args))
}

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "command failed:\nstdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

fn fails_with(r: (bool, String, String), msg: &str) {
    assert!(!r.0, "command unexpectedly succeeded: {}", r.1);
    assert!(
        r.2.contains(msg),
        "stderr does not contain {msg:?}:\n{}",
        r.2
    );
}

#[test]
fn qemu_loads_quarry_library() {
    let env = Env::new(&["data"]);
    ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/foo", "1G"],
    ));
    let bin = common::require("qemu-img");
    let mut c = env.cmd(bin);
    c.args(["info", "rbd:data/foo"]).env("LD_DEBUG", "libs");
    let (good, _out, err) = env.run(&mut c);
    assert!(good, "{err}");
    let ours = env.path().join("lib").join("librbd.so.1");
    assert!(
        err.contains(&format!("calling init: {}", ours.display())),
        "qemu-img did not load Quarry's librbd.so.1:\n{err}"
    );
    // One mapping serves both sonames (SONAME librados.so.2 + same inode).
    let inits = err
        .lines()
        .filter(|l| l.contains("calling init:"))
        .filter(|l| l.ends_with("/librbd.so.1") || l.ends_with("/librados.so.2"))
        .count();
    assert_eq!(inits, 1, "library initialised {inits} times:\n{err}");
    assert!(
        !err.contains("/lib/x86_64-linux-gnu/librbd.so.1")
            && !err.contains("/lib/x86_64-linux-gnu/librados.so.2"),
        "Ceph's own library was loaded too"
    );
}

#[test]
fn create_info_resize_as_ceph() {
    let env = Env::new(&["data"]);
    let out = ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/foo", "10G"],
    ));
    assert_eq!(out, "Formatting 'rbd:data/foo', fmt=raw size=10737418240\n");
    let info = ok(qemu_img(&env, &["info", "rbd:data/foo"]));
    assert_eq!(
        info,
        "image: json:{\"driver\": \"raw\", \"file\": {\"pool\": \"data\", \"image\": \"foo\", \"driver\": \"rbd\", \"namespace\": \"\"}}\n\
         file format: raw\n\
         virtual size: 10 GiB (10737418240 bytes)\n\
         disk size: unavailable\n\
         cluster_size: 4194304\n"
    );
    fails_with(
        qemu_img(&env, &["create", "-f", "raw", "rbd:data/foo", "10G"]),
        "qemu-img: rbd:data/foo: error rbd create: File exists",
    );
    let out = ok(qemu_img(&env, &["resize", "rbd:data/foo", "20G"]));
    assert_eq!(out, "Image resized.\n");
    let info = ok(qemu_img(&env, &["info", "rbd:data/foo"]));
    assert!(
        info.contains("virtual size: 20 GiB (21474836480 bytes)"),
        "{info}"
    );
    fails_with(
        qemu_img(&env, &["resize", "-f", "raw", "rbd:data/foo", "15G"]),
        "Use the --shrink option to perform a shrink operation.",
    );
    ok(qemu_img(
        &env,
        &["resize", "-f", "raw", "--shrink", "rbd:data/foo", "10G"],
    ));
    let info = ok(qemu_img(&env, &["info", "rbd:data/foo"]));
    assert!(
        info.contains("virtual size: 10 GiB (10737418240 bytes)"),
        "{info}"
    );
}

#[test]
fn qemu_io_patterns_under_every_cache_mode() {
    let env = Env::new(&["data"]);
    ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/io", "64M"],
    ));
    for (i, mode) in ["none", "writethrough", "writeback", "directsync", "unsafe"]
        .iter()
        .enumerate()
    {
        let pat = format!("0x{:02x}", 0x31 + i);
        let off = 4095 + i * 1_000_003;
        let w = format!("write -P {pat} {off} 777777");
        let r = format!("read -P {pat} {off} 777777");
        let out = ok(qemu_io(
            &env,
            &[
                "-f",
                "raw",
                "-t",
                mode,
                "-c",
                &w,
                "-c",
                "flush",
                "-c",
                &r,
                "rbd:data/io",
            ],
        ));
        assert!(out.contains("wrote 777777/777777"), "{mode}: {out}");
        assert!(out.contains("read 777777/777777"), "{mode}: {out}");
        // Read back in a new process: the data is durable.
        let out = ok(qemu_io(&env, &["-f", "raw", "-r", "-c", &r, "rbd:data/io"]));
        assert!(out.contains("read 777777/777777"), "{mode} reopen: {out}");
    }
    // Discard / write_zeroes through QEMU.
    ok(qemu_io(
        &env,
        &[
            "-f",
            "raw",
            "-c",
            "write -z 4095 100000",
            "-c",
            "read -P 0 4095 100000",
            "rbd:data/io",
        ],
    ));
}

#[test]
fn convert_compare_map() {
    let env = Env::new(&["data"]);
    let q = env.path().join("debian_squeeze.qcow2");
    let qs = q.to_str().expect("utf8");
    ok(qemu_img(&env, &["create", "-f", "qcow2", qs, "64M"]));
    ok(qemu_io(
        &env,
        &[
            "-c",
            "write -P 0x5a 1M 2M",
            "-c",
            "write -P 0x6b 40M 512k",
            qs,
        ],
    ));
    ok(qemu_img(
        &env,
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qs,
            "rbd:data/squeeze",
        ],
    ));
    let out = ok(qemu_img(
        &env,
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            qs,
            "rbd:data/squeeze",
        ],
    ));
    assert!(out.contains("Images are identical."), "{out}");
    fails_with(
        qemu_img(
            &env,
            &[
                "convert",
                "-f",
                "qcow2",
                "-O",
                "raw",
                qs,
                "rbd:data/squeeze",
            ],
        ),
        "error rbd create: File exists",
    );
    // rbd -> qcow2 and rbd -> rbd.
    let back = env.path().join("back.qcow2");
    let bs = back.to_str().expect("utf8");
    ok(qemu_img(
        &env,
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "rbd:data/squeeze",
            bs,
        ],
    ));
    ok(qemu_img(
        &env,
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            "rbd:data/squeeze",
            "rbd:data/copy",
        ],
    ));
    let out = ok(qemu_img(
        &env,
        &["compare", "-f", "qcow2", "-F", "raw", bs, "rbd:data/copy"],
    ));
    assert!(out.contains("Images are identical."), "{out}");
    // Allocation map through rbd_diff_iterate2 (4 MiB objects).
    let map = ok(qemu_img(
        &env,
        &["map", "-f", "raw", "--output=json", "rbd:data/squeeze"],
    ));
    assert!(
        map.contains("\"data\": false"),
        "holes expected in the map: {map}"
    );
    assert!(
        map.contains("\"data\": true"),
        "data expected in the map: {map}"
    );
}

#[test]
fn snapshots_through_qemu_img() {
    let env = Env::new(&["data"]);
    ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/foo", "20G"],
    ));
    ok(qemu_io(
        &env,
        &["-f", "raw", "-c", "write -P 0x11 0 1M", "rbd:data/foo"],
    ));
    ok(qemu_img(&env, &["snapshot", "-c", "snap1", "rbd:data/foo"]));
    let out = ok(qemu_img(&env, &["snapshot", "-l", "rbd:data/foo"]));
    assert_eq!(
        out,
        "Snapshot list:\n\
         ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n\
         snap1     snap1              20 GiB 1970-01-01 00:00:00 00:00:00.000          0\n"
    );
    fails_with(
        qemu_img(&env, &["snapshot", "-c", "snap1", "rbd:data/foo"]),
        "qemu-img: Could not create snapshot 'snap1': -17 (File exists)",
    );
    ok(qemu_io(
        &env,
        &["-f", "raw", "-c", "write -P 0x22 0 1M", "rbd:data/foo"],
    ));
    // The snapshot is read-only and keeps the old data.
    ok(qemu_io(
        &env,
        &[
            "-f",
            "raw",
            "-r",
            "-c",
            "read -P 0x11 0 1M",
            "rbd:data/foo@snap1",
        ],
    ));
    fails_with(
        qemu_img(&env, &["resize", "-f", "raw", "rbd:data/foo@snap1", "30G"]),
        "Could not open 'rbd:data/foo@snap1': rbd snapshots are read-only",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/foo@nosuchsnap"]),
        "Could not open 'rbd:data/foo@nosuchsnap': error reading header from foo: No such file or directory",
    );
    // Apply (rollback), then delete.
    ok(qemu_img(&env, &["snapshot", "-a", "snap1", "rbd:data/foo"]));
    ok(qemu_io(
        &env,
        &["-f", "raw", "-r", "-c", "read -P 0x11 0 1M", "rbd:data/foo"],
    ));
    fails_with(
        qemu_img(&env, &["snapshot", "-a", "nosuchsnap", "rbd:data/foo"]),
        "Could not apply snapshot 'nosuchsnap'",
    );
    ok(qemu_img(&env, &["snapshot", "-d", "snap1", "rbd:data/foo"]));
    let out = ok(qemu_img(&env, &["snapshot", "-l", "rbd:data/foo"]));
    assert!(!out.contains("snap1"), "{out}");
}

#[test]
fn namespaces() {
    let env = Env::new(&["data"]);
    let mkpool = env.compile("mkpool.c", "mkpool");
    let (good, _o, err) = env.run(env.cmd(&mkpool).args(["--ns", "data", "ns1"]));
    assert!(good, "{err}");
    ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/ns1/img", "1G"],
    ));
    let info = ok(qemu_img(&env, &["info", "rbd:data/ns1/img"]));
    assert!(info.contains("\"namespace\": \"ns1\""), "{info}");
    assert!(info.contains("virtual size: 1 GiB"), "{info}");
    ok(qemu_io(
        &env,
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x77 512 64k",
            "-c",
            "read -P 0x77 512 64k",
            "rbd:data/ns1/img",
        ],
    ));
    // The same name in the default namespace is a different image.
    fails_with(
        qemu_img(&env, &["info", "rbd:data/img"]),
        "error reading header from img: No such file or directory",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/nons/img"]),
        "namespace 'nons' does not exist",
    );
}

#[test]
fn errors_users_meet() {
    let env = Env::new(&["data"]);
    ok(qemu_img(
        &env,
        &["create", "-f", "raw", "rbd:data/foo", "1G"],
    ));
    fails_with(
        qemu_img(&env, &["info", "rbd:nosuchpool/foo"]),
        "qemu-img: Could not open 'rbd:nosuchpool/foo': error opening pool nosuchpool: No such file or directory",
    );
    fails_with(
        qemu_img(&env, &["create", "-f", "raw", "rbd:nosuchpool/foo", "1G"]),
        "qemu-img: rbd:nosuchpool/foo: error opening pool nosuchpool: No such file or directory",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/nosuchimage"]),
        "qemu-img: Could not open 'rbd:data/nosuchimage': error reading header from nosuchimage: No such file or directory",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/foo:no_such_option=1"]),
        "qemu-img: Could not open 'rbd:data/foo:no_such_option=1': invalid conf option no_such_option: No such file or directory",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/foo:rbd_cache=maybe"]),
        "invalid conf option rbd_cache: Invalid argument",
    );
    fails_with(
        qemu_img(&env, &["info", "rbd:data/foo:conf=/nonexistent/ceph.conf"]),
        "error reading conf file /nonexistent/ceph.conf: No such file or directory",
    );
    fails_with(
        qemu_img(
            &env,
            &["info", "rbd:data/foo:id=glance:conf=/nonexistent/ceph.conf"],
        ),
        "error reading conf file /nonexistent/ceph.conf: No such file or directory",
    );
    // An explicit conf path with an escaped colon reaches us unescaped.
    let odd = env.path().join("dir:with:colons");
    std::fs::create_dir_all(&odd).expect("mkdir");
    std::fs::copy(env.conf(), odd.join("ceph.conf")).expect("copy conf");
    let spec = format!(
        "rbd:data/foo:conf={}",
        odd.join("ceph.conf")
            .display()
            .to_string()
            .replace(':', "\\:")
    );
    let bin = common::require("qemu-img");
    let (good, out, err) = env.run(env.cmd(bin).args(["info", &spec]).env_remove("CEPH_CONF"));
    assert!(good, "{err}");
    assert!(out.contains("virtual size: 1 GiB"), "{out}");
    // No config at all: nothing tells the library where the cluster is.
    let bin = common::require("qemu-img");
    let (good, _out, err) = env.run(
        env.cmd(bin)
            .args(["info", "rbd:data/foo"])
            .env("CEPH_CONF", "/nonexistent.conf"),
    );
    assert!(!good);
    assert!(
        err.contains("error connecting: No such file or directory"),
        "{err}"
    );
    // Encryption on an image without a LUKS header is refused cleanly.
    let (good, _out, err) = qemu_img(
        &env,
        &[
            "info",
            "--object",
            "secret,id=sec0,data=123456",
            "--image-opts",
            "driver=rbd,pool=data,image=foo,encrypt.format=luks,encrypt.key-secret=sec0",
        ],
    );
    assert!(!good);
    assert!(
        err.contains("encryption load fail: Invalid argument"),
        "{err}"
    );
}

#[test]
fn effective_cache_mode_follows_qemu() {
    let env = Env::new(&["data"]);
    ok(qemu_img(&env, &["create", "-f", "raw", "rbd:data/c", "8M"]));
    let cases = [
        ("none", "rbd:data/c", "cache mode none"),
        ("writeback", "rbd:data/c", "cache mode writearound"),
        ("writethrough", "rbd:data/c", "cache mode writearound"),
        // The spec's rbd_cache_max_dirty=0 is Ceph's writethrough.
        (
            "writeback",
            "rbd:data/c:rbd_cache_max_dirty=0",
            "cache mode writethrough",
        ),
        // QEMU sets rbd_cache last: it beats the spec's pair (Ceph 16 default policy: writearound).
        (
            "writeback",
            "rbd:data/c:rbd_cache=false",
            "cache mode writearound",
        ),
        ("none", "rbd:data/c:rbd_cache=true", "cache mode none"),
        // The in-memory cache is opt-in through the policy, as in Ceph 16;
        // cache=none still turns it off, max_dirty=0 makes it write-through.
        (
            "writeback",
            "rbd:data/c:rbd_cache_policy=writeback",
            "cache mode writeback",
        ),
        (
            "none",
            "rbd:data/c:rbd_cache_policy=writeback",
            "cache mode none",
        ),
        (
            "writeback",
            "rbd:data/c:rbd_cache_policy=writeback:rbd_cache_max_dirty=0",
            "cache mode writethrough",
        ),
        (
            "writeback",
            "rbd:data/c:rbd_cache_policy=writethrough",
            "cache mode writethrough",
        ),
    ];
    for (mode, spec, want) in cases {
        let bin = common::require("qemu-io");
        let (good, _out, err) = env.run(
            env.cmd(bin)
                .args(["-f", "raw", "-t", mode, "-c", "read 0 4k", spec])
                .env("QUARRY_LOG_CACHE", "1"),
        );
        assert!(good, "{err}");
        assert!(err.contains(want), "{mode} {spec}: want {want:?}:\n{err}");
    }
    // An image-level override beats QEMU's own rbd_cache (librbd levels).
    let setmeta = env.compile("setmeta.c", "setmeta");
    let (good, _o, err) = env.run(
        env.cmd(&setmeta)
            .args(["data", "c", "conf_rbd_cache", "false"]),
    );
    assert!(good, "{err}");
    let bin = common::require("qemu-io");
    let (good, _out, err) = env.run(
        env.cmd(bin)
            .args([
                "-f",
                "raw",
                "-t",
                "writeback",
                "-c",
                "read 0 4k",
                "rbd:data/c",
            ])
            .env("QUARRY_LOG_CACHE", "1"),
    );
    assert!(good, "{err}");
    assert!(
        err.contains("cache mode none"),
        "image override ignored:\n{err}"
    );
}

const SECRET: &str = "secret,id=sec0,data=correct horse";

/// `--image-opts` for an encrypted rbd image.
fn enc_opts(image: &str, format: &str) -> String {
    format!("driver=rbd,pool=data,image={image},encrypt.format={format},encrypt.key-secret=sec0")
}

/// `qemu-img create` of an encrypted rbd image in `data`.
fn create_encrypted(env: &Env, image: &str, format: &str, size: &str) {
    ok(qemu_img(
        env,
        &[
            "create",
            "-f",
            "raw",
            "--object",
            SECRET,
            "-o",
            &format!("encrypt.format={format},encrypt.key-secret=sec0"),
            &format!("rbd:data/{image}"),
            size,
        ],
    ));
}

/// qemu-io commands on an encrypted rbd image (or a LUKS file).
fn enc_io(env: &Env, opts: &str, cmds: &[&str]) -> (bool, String, String) {
    let mut args = vec!["--object", SECRET, "--image-opts", opts];
    for c in cmds {
        args.extend(["-c", c]);
    }
    qemu_io(env, &args)
}

/// What the guest writes: aligned, unaligned (a read-modify-write of
/// its edge sectors) and a zeroed range inside the pattern.
const WRITES: [&str; 3] = [
    "write -P 0xab 0 1M",
    "write -P 0xcd 1000 3000",
    "write -z 65536 4096",
];
/// And what it reads back.
const CHECKS: [&str; 5] = [
    "read -P 0xab 0 1000",
    "read -P 0xcd 1000 3000",
    "read -P 0xab 4000 61536",
    "read -P 0 65536 4096",
    "read -P 0xab 69632 978944",
];

/// QEMU 7.2 reads LUKS1 only, so LUKS2's data is checked with the volume
/// key cryptsetup unlocks and Python's AES-XTS: the second 4 KiB sector of
/// the data area (all 0xab) decrypts with IV 8, its 512-byte sector
/// number, as dm-crypt counts it.
fn luks2_sector_decrypts(cs: &str, raw: &std::path::Path, dir: &std::path::Path) {
    let key = dir.join("pass-luks2");
    std::fs::write(&key, "correct horse").expect("key file");
    let out = std::process::Command::new(cs)
        .args([
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
        ])
        .arg(&key)
        .arg(raw)
        .output()
        .expect("cryptsetup");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("MK dump:").expect("volume key in the dump") + 8;
    let hex: String = text[start..]
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    assert_eq!(hex.len(), 128, "a 64-byte volume key: {text}");
    // "Payload offset:" counts 512-byte sectors.
    let offset = text
        .split("Payload offset:")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("data offset in the dump")
        * 512;
    let script = format!(
        "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         d = open({raw:?}, 'rb').read()[{o}:{o} + 4096]\n\
         c = Cipher(algorithms.AES(bytes.fromhex('{hex}')), modes.XTS((8).to_bytes(16, 'little')))\n\
         x = c.decryptor()\n\
         p = x.update(d) + x.finalize()\n\
         assert p == b'\\xab' * 4096, p[:16]\n",
        raw = raw.display().to_string(),
        o = offset + 4096,
    );
    let st = std::process::Command::new(common::require("python3"))
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(
        st.success(),
        "LUKS2 data does not decrypt as dm-crypt reads it"
    );
}

#[test]
fn luks_images_through_qemu_as_librbd_formats_them() {
    let env = Env::new(&["data"]);
    let dir = env.path().to_path_buf();
    for (format, image) in [("luks", "enc1"), ("luks2", "enc2")] {
        // qemu-img's create path: rbd_create, rbd_encryption_format, then
        // a raw resize so that the data area is the size asked for.
        create_encrypted(&env, image, format, "64M");
        let info = ok(qemu_img(
            &env,
            &[
                "info",
                "--object",
                SECRET,
                "--image-opts",
                &enc_opts(image, format),
            ],
        ));
        assert!(
            info.contains("virtual size: 64 MiB (67108864 bytes)"),
            "{info}"
        );
        ok(enc_io(&env, &enc_opts(image, format), &WRITES));
        ok(enc_io(&env, &enc_opts(image, format), &CHECKS));
        // A wrong passphrase opens nothing.
        fails_with(
            qemu_io(
                &env,
                &[
                    "--object",
                    "secret,id=sec0,data=wrong",
                    "--image-opts",
                    &enc_opts(image, format),
                    "-c",
                    "read 0 4096",
                ],
            ),
            "encryption load fail: Operation not permitted",
        );
        // Asking for the other LUKS version is refused, not misread.
        let other = if format == "luks" { "luks2" } else { "luks" };
        fails_with(
            enc_io(&env, &enc_opts(image, other), &["read 0 4096"]),
            "encryption load fail: Invalid argument",
        );
        // The raw image is the LUKS header, then ciphertext.
        let raw = dir.join(format!("{image}.raw"));
        ok(qemu_img(
            &env,
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &format!("rbd:data/{image}"),
                raw.to_str().unwrap(),
            ],
        ));
        let bytes = std::fs::read(&raw).expect("raw export");
        let magic: &[u8] = &[b'L', b'U', b'K', b'S', 0xba, 0xbe];
        assert_eq!(&bytes[..6], magic);
        assert!(
            !bytes.windows(64).any(|w| w.iter().all(|&b| b == 0xab)),
            "plaintext visible in the raw image"
        );
        if format == "luks" {
            // QEMU's own LUKS driver (an independent implementation) reads
            // what Quarry's librbd wrote.
            let file_opts = format!(
                "driver=luks,key-secret=sec0,file.filename={}",
                raw.display()
            );
            ok(enc_io(&env, &file_opts, &CHECKS));
        }
        if let Some(cs) = ["/usr/sbin/cryptsetup", "/sbin/cryptsetup"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        {
            let out = std::process::Command::new(cs)
                .args(["luksDump", raw.to_str().unwrap()])
                .output()
                .expect("cryptsetup");
            let dump = String::from_utf8_lossy(&out.stdout);
            let want = if format == "luks" {
                "Version:       \t1"
            } else {
                "Version:       \t2"
            };
            assert!(dump.contains(want), "{dump}");
            assert!(dump.contains("xts-plain64"), "{dump}");
            if format == "luks2" {
                assert!(dump.contains("sector: 4096"), "{dump}");
                luks2_sector_decrypts(cs, &raw, &dir);
            }
        }
    }
    // A raw golden image converted into a new encrypted one: QEMU opens
    // the target with its key; a new image reads zeros where nothing was
    // written, so --target-is-zero keeps the copy thin and exact.
    let src = dir.join("golden.raw");
    let sname = src.to_str().unwrap();
    ok(qemu_img(&env, &["create", "-f", "raw", sname, "32M"]));
    ok(qemu_io(
        &env,
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 0 1M",
            "-c",
            "write -P 0x6b 20M 3M",
            sname,
        ],
    ));
    create_encrypted(&env, "converted", "luks", "32M");
    let target = enc_opts("converted", "luks");
    ok(qemu_img(
        &env,
        &[
            "convert",
            "-n",
            "--target-is-zero",
            "-f",
            "raw",
            "--object",
            SECRET,
            "--target-image-opts",
            sname,
            &target,
        ],
    ));
    let same = ok(qemu_img(
        &env,
        &[
            "compare",
            "--object",
            SECRET,
            "--image-opts",
            &format!("driver=file,filename={sname}"),
            &target,
        ],
    ));
    assert!(same.contains("Images are identical."), "{same}");
    // The reverse: a LUKS image made by cryptsetup and written through
    // QEMU's own LUKS driver, copied into the pool raw, opens through
    // librbd with its passphrase.
    let file = dir.join("made-by-cryptsetup.luks");
    let fname = file.to_str().unwrap();
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(16 << 20))
        .expect("luks file");
    let keyfile = dir.join("passphrase");
    std::fs::write(&keyfile, "correct horse").expect("key file");
    let st = std::process::Command::new(common::require("cryptsetup"))
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks1",
            "--pbkdf-force-iterations",
            "1000",
        ])
        .arg("--key-file")
        .arg(&keyfile)
        .arg(&file)
        .status()
        .expect("cryptsetup");
    assert!(st.success(), "cryptsetup luksFormat failed");
    ok(enc_io(
        &env,
        &format!("driver=luks,key-secret=sec0,file.filename={fname}"),
        &WRITES,
    ));
    ok(qemu_img(
        &env,
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            fname,
            "rbd:data/imported",
        ],
    ));
    ok(enc_io(&env, &enc_opts("imported", "luks"), &CHECKS));
}
