//! `quarry install` / `quarry uninstall`: make Quarry the system's
//! librbd/librados and its `rbd`/`ceph`, so programs started with a clean
//! environment (libvirt's QEMU, commands typed with no `. D/env`) use it.
//!
//! Layout under the prefix (default `/usr/local`, which Debian's dynamic
//! linker searches before `/lib/x86_64-linux-gnu`, and whose `bin` comes
//! before `/usr/bin` on the default PATH):
//!
//! ```text
//! lib/quarry/libquarry_capi.so     the library (one file)
//! lib/quarry/quarry                the binary
//! lib/quarry/librbd.so.1           an empty shim, SONAME librbd.so.1, DT_NEEDED librados.so.2
//! lib/librados.so.2 -> quarry/libquarry_capi.so, lib/librbd.so.1 -> quarry/librbd.so.1
//! bin/quarry, bin/rbd, bin/ceph    -> ../lib/quarry/quarry
//! lib/quarry/manifest              what was created or replaced, for uninstall
//! ```
//!
//! With `--cluster-dir D` the cluster's `ceph.conf` and admin keyring
//! (0600) go to `/etc/ceph/` too. Anything already at a target path is
//! moved aside to `<path>.quarry-orig` and put back by `uninstall`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `quarry install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Installation prefix.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Where the system's Ceph configuration lives.
    #[arg(long, default_value = "/etc/ceph")]
    etc: PathBuf,
    /// Also install this cluster's ceph.conf and admin keyring into --etc.
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
    /// Do not run ldconfig (for installs into a scratch prefix).
    #[arg(long)]
    no_ldconfig: bool,
}

/// Options of `quarry uninstall`.
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// Installation prefix used by `install`.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Do not run ldconfig.
    #[arg(long)]
    no_ldconfig: bool,
}

const BACKUP_SUFFIX: &str = ".quarry-orig";

/// One line of the manifest.
#[derive(Debug, PartialEq)]
enum Entry {
    /// We created this path; uninstall removes it.
    Created(PathBuf),
    /// We moved an existing file aside; uninstall puts it back.
    Replaced(PathBuf),
}

fn manifest_path(prefix: &Path) -> PathBuf {
    prefix.join("lib/quarry/manifest")
}

fn ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn read_manifest(prefix: &Path) -> Result<Option<Vec<Entry>>, String> {
    let p = manifest_path(prefix);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", p.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = match line.split_once(' ') {
            Some(("created", path)) => Entry::Created(path.into()),
            Some(("replaced", path)) => Entry::Replaced(path.into()),
            _ => {
                return Err(format!(
                    "{}:{}: malformed manifest line {line:?}",
                    p.display(),
                    n + 1
                ))
            }
        };
        out.push(entry);
    }
    Ok(Some(out))
}

/// Records what an install does, so it can be undone exactly.
struct Installer {
    entries: Vec<Entry>,
}

impl Installer {
    /// Move whatever is at `path` aside (recorded), then note it as ours.
    fn claim(&mut self, path: &Path) -> Result<(), String> {
        if fs::symlink_metadata(path).is_ok() {
            let backup = backup_of(path);
            if fs::symlink_metadata(&backup).is_ok() {
                return Err(format!(
                    "{} exists already; refusing to overwrite a previous backup",
                    backup.display()
                ));
            }
            ctx(fs::rename(path, &backup), || {
                format!("moving {} aside", path.display())
            })?;
            self.entries.push(Entry::Replaced(path.to_path_buf()));
        }
        self.entries.push(Entry::Created(path.to_path_buf()));
        Ok(())
    }

    fn copy(&mut self, from: &Path, to: &Path, mode: u32) -> Result<(), String> {
        self.claim(to)?;
        ctx(fs::copy(from, to), || {
            format!("copying {} to {}", from.display(), to.display())
        })?;
        ctx(
            fs::set_permissions(to, fs::Permissions::from_mode(mode)),
            || format!("chmod {}", to.display()),
        )
    }

    fn link(&mut self, target: &Path, at: &Path) -> Result<(), String> {
        self.claim(at)?;
        ctx(symlink(target, at), || {
            format!("symlink {} -> {}", at.display(), target.display())
        })
    }

    fn write(&mut self, at: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
        self.claim(at)?;
        let mut f = ctx(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_compat(mode)
                .open(at),
            || format!("creating {}", at.display()),
        )?;
        ctx(f.write_all(contents), || {
            format!("writing {}", at.display())
        })?;
        ctx(f.sync_all(), || format!("syncing {}", at.display()))
    }
}

/// `OpenOptions::mode` behind a tiny trait so the call reads in order.
trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for fs::OpenOptions {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(mode)
    }
}

fn backup_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(BACKUP_SUFFIX);
    PathBuf::from(s)
}

fn ldconfig() -> Result<(), String> {
    let st = Command::new("ldconfig")
        .status()
        .map_err(|e| format!("running ldconfig: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("ldconfig failed: {st}"))
    }
}

/// Undo an install from its manifest: remove what we created, restore what
/// we moved aside (in reverse order, so a path both replaced and created
/// ends up as it was).
fn undo(prefix: &Path, entries: &[Entry]) -> Result<(), String> {
    for e in entries.iter().rev() {
        match e {
            Entry::Created(p) => match fs::remove_file(p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(format!("removing {}: {err}", p.display())),
            },
            Entry::Replaced(p) => {
                let b = backup_of(p);
                ctx(fs::rename(&b, p), || {
                    format!("restoring {} from {}", p.display(), b.display())
                })?;
            }
        }
    }
    let _ = fs::remove_file(manifest_path(prefix));
    let _ = fs::remove_dir(prefix.join("lib/quarry"));
    Ok(())
}

/// `quarry install`.
pub fn install(a: InstallArgs) -> Result<(), String> {
    let exe = ctx(std::env::current_exe(), || {
        "locating the quarry binary".into()
    })?;
    let exe_dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    let lib = exe_dir.join("libquarry_capi.so");
    if !lib.is_file() {
        return Err(format!(
            "{} not found next to the quarry binary; build it with `cargo build --release`",
            lib.display()
        ));
    }
    if let Some(old) = read_manifest(&a.prefix)? {
        // Reinstall: put the system back as it was first.
        undo(&a.prefix, &old)?;
    }
    let qdir = a.prefix.join("lib/quarry");
    for d in [qdir.clone(), a.prefix.join("bin")] {
        ctx(fs::create_dir_all(&d), || {
            format!("creating {}", d.display())
        })?;
    }
    let mut inst = Installer {
        entries: Vec::new(),
    };
    let r = (|| {
        let so = qdir.join("libquarry_capi.so");
        inst.copy(&lib, &so, 0o755)?;
        let bin = qdir.join("quarry");
        inst.copy(&exe, &bin, 0o755)?;
        // The dynamic linker's cache (ldconfig) is keyed by SONAME, and the
        // library's is librados.so.2: a librbd.so.1 symlink to it would not
        // be registered. librbd.so.1 is therefore a tiny shim with its own
        // SONAME and no code, whose only job is to pull the one real
        // library in (DT_NEEDED librados.so.2): symbols resolve there, so a
        // process still has exactly one copy of the library state.
        let shim = qdir.join("librbd.so.1");
        inst.claim(&shim)?;
        build_shim(&qdir, &shim)?;
        inst.link(
            Path::new("quarry/librbd.so.1"),
            &a.prefix.join("lib/librbd.so.1"),
        )?;
        inst.link(
            Path::new("quarry/libquarry_capi.so"),
            &a.prefix.join("lib/librados.so.2"),
        )?;
        for name in ["quarry", "rbd", "ceph", "rados"] {
            inst.link(
                Path::new("../lib/quarry/quarry"),
                &a.prefix.join("bin").join(name),
            )?;
        }
        if let Some(d) = &a.cluster_dir {
            install_cluster_config(&mut inst, d, &a.etc)?;
        }
        Ok::<_, String>(())
    })();
    // The manifest is written even after a partial failure, so uninstall
    // can always put back what was moved aside.
    let text: String = inst
        .entries
        .iter()
        .map(|e| match e {
            Entry::Created(p) => format!("created {}\n", p.display()),
            Entry::Replaced(p) => format!("replaced {}\n", p.display()),
        })
        .collect();
    let mp = manifest_path(&a.prefix);
    ctx(fs::write(&mp, text), || format!("writing {}", mp.display()))?;
    r?;
    if !a.no_ldconfig {
        ldconfig()?;
    }
    println!(
        "quarry installed under {} (librbd.so.1, librados.so.2, rbd, ceph){}",
        a.prefix.display(),
        match &a.cluster_dir {
            Some(d) => format!(
                "; cluster {} configured in {}",
                d.display(),
                a.etc.display()
            ),
            None => String::new(),
        }
    );
    Ok(())
}

/// Link an empty shared object with SONAME librbd.so.1 that needs the real
/// library (SONAME librados.so.2) sitting in `dir`.
fn build_shim(dir: &Path, out: &Path) -> Result<(), String> {
    let src = dir.join("librbd-shim.c");
    ctx(
        fs::write(
            &src,
            "/* librbd.so.1 shim: the code is in librados.so.2 (Quarry). */\n",
        ),
        || format!("writing {}", src.display()),
    )?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(&src)
        .arg("-Wl,-soname,librbd.so.1")
        .arg("-Wl,--no-as-needed")
        .arg("-L")
        .arg(dir)
        .arg("-l:libquarry_capi.so")
        .output()
        .map_err(|e| format!("running {cc} to link the librbd.so.1 shim: {e}"))?;
    let _ = fs::remove_file(&src);
    if !o.status.success() {
        return Err(format!(
            "linking the librbd.so.1 shim with {cc} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    ctx(
        fs::set_permissions(out, fs::Permissions::from_mode(0o755)),
        || format!("chmod {}", out.display()),
    )
}

fn install_cluster_config(inst: &mut Installer, dir: &Path, etc: &Path) -> Result<(), String> {
    let conf_src = dir.join("ceph.conf");
    let key_src = dir.join("ceph.client.admin.keyring");
    let conf = ctx(fs::read_to_string(&conf_src), || {
        format!("reading {}", conf_src.display())
    })?;
    let key = ctx(fs::read(&key_src), || {
        format!("reading {}", key_src.display())
    })?;
    ctx(fs::create_dir_all(etc), || {
        format!("creating {}", etc.display())
    })?;
    let key_dst = etc.join("ceph.client.admin.keyring");
    // The cluster's conf names its own keyring path; point it at the copy.
    let conf = conf.replace(
        &key_src.display().to_string(),
        &key_dst.display().to_string(),
    );
    inst.write(&etc.join("ceph.conf"), conf.as_bytes(), 0o644)?;
    inst.write(&key_dst, &key, 0o600)
}

/// `quarry uninstall`.
pub fn uninstall(a: UninstallArgs) -> Result<(), String> {
    let Some(entries) = read_manifest(&a.prefix)? else {
        return Err(format!(
            "no quarry installation under {} (no {})",
            a.prefix.display(),
            manifest_path(&a.prefix).display()
        ));
    };
    undo(&a.prefix, &entries)?;
    if !a.no_ldconfig {
        ldconfig()?;
    }
    println!("quarry uninstalled from {}", a.prefix.display());
    Ok(())
}
