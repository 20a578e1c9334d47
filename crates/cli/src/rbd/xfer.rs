//! Data-moving `rbd` commands: import/export (raw, sparse-aware), the
//! `rbd diff v1` incremental stream (export-diff/import-diff), diff, cp and
//! bench.
//!
//! The diff stream is Ceph's documented format, so backups made with Ceph's
//! `rbd export-diff` import here and vice versa: the banner `rbd diff v1\n`,
//! then records, each a one-byte tag: `f` + le32 length + from-snapshot
//! name, `t` + le32 length + to-snapshot name, `s` + le64 image size,
//! `w` + le64 offset + le64 length + data, `z` + le64 offset + le64 length
//! (zeroed), and `e` (end). The record codec (`diff_read_*`,
//! `diff_*_record`) is shared with `mergediff` (`rbd merge-diff`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_common::size::{format_size, SizeUnit};
use quarry_common::Errno;
use quarry_rbd::{CopyOptions, DiffOptions, Image};
use serde_json::{json, Value};

use super::cmds::{create_opts, dest_spec};
use super::{size_arg, Align, CmdError, CmdResult, CreateArgs, Ctx, Progress, Table};

/// Bytes moved per engine call (one default object).
pub(super) const CHUNK: u64 = 4 << 20;
/// Granularity of the holes an export leaves in its file.
const SPARSE_BLOCK: usize = 4096;
/// The banner of Ceph's incremental diff stream.
pub const DIFF_BANNER: &[u8] = b"rbd diff v1\n";
/// Longest snapshot name accepted from a diff stream (bounds allocation).
const MAX_DIFF_NAME: u32 = 4096;

/// `rbd diff v1` record tags (shared by export-diff, import-diff and
/// merge-diff): start snapshot name.
pub(super) const DIFF_FROM_SNAP: u8 = b'f';
/// End snapshot name record.
pub(super) const DIFF_TO_SNAP: u8 = b't';
/// Image size record.
pub(super) const DIFF_IMAGE_SIZE: u8 = b's';
/// Data extent record.
pub(super) const DIFF_WRITE: u8 = b'w';
/// Zeroed extent record.
pub(super) const DIFF_ZERO: u8 = b'z';
/// End of the stream.
pub(super) const DIFF_END: u8 = b'e';

/// Why a diff stream could not be read; each command words it its own way.
#[derive(Debug)]
pub(super) enum DiffReadError {
    /// The stream ended inside a record.
    Truncated,
    /// A snapshot name longer than [`MAX_DIFF_NAME`].
    NameTooLong,
    /// The read itself failed.
    Io(std::io::Error),
}

/// Fill `buf` from a diff stream.
pub(super) fn diff_read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), DiffReadError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DiffReadError::Truncated
        } else {
            DiffReadError::Io(e)
        }
    })
}

/// A little-endian u64 of a diff stream.
pub(super) fn diff_read_u64(r: &mut dyn Read) -> Result<u64, DiffReadError> {
    let mut b = [0u8; 8];
    diff_read_exact(r, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The payload of an `f`/`t` record (le32 length, then the name's bytes),
/// its length bounded before anything is allocated.
pub(super) fn diff_read_name(r: &mut dyn Read) -> Result<Vec<u8>, DiffReadError> {
    let mut b = [0u8; 4];
    diff_read_exact(r, &mut b)?;
    let n = u32::from_le_bytes(b);
    if n > MAX_DIFF_NAME {
        return Err(DiffReadError::NameTooLong);
    }
    let mut v = vec![0u8; n as usize];
    diff_read_exact(r, &mut v)?;
    Ok(v)
}

/// An `f`/`t` record.
pub(super) fn diff_name_record(tag: u8, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + name.len());
    v.push(tag);
    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
    v.extend_from_slice(name);
    v
}

/// An `s` record.
pub(super) fn diff_size_record(size: u64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = DIFF_IMAGE_SIZE;
    v[1..].copy_from_slice(&size.to_le_bytes());
    v
}

/// The header of a `w` or `z` record (a `w` record's data follows it).
pub(super) fn diff_extent_record(tag: u8, off: u64, len: u64) -> [u8; 17] {
    let mut v = [0u8; 17];
    v[0] = tag;
    v[1..9].copy_from_slice(&off.to_le_bytes());
    v[9..].copy_from_slice(&len.to_le_bytes());
    v
}

fn io_err(what: &str, e: &std::io::Error) -> CmdError {
    let errno = e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO);
    CmdError::errno(what, errno)
}

/// Data extents of an image view (parent data included), merged.
async fn data_extents(
    img: &Image,
    from: Option<&str>,
) -> quarry_rbd::Result<Vec<(u64, u64, bool)>> {
    let opts = DiffOptions {
        from_snap: from.map(str::to_string),
        include_parent: from.is_none(),
        whole_object: false,
    };
    Ok(img
        .diff(0, img.size(), &opts)
        .await?
        .into_iter()
        .map(|e| (e.offset, e.len, e.exists))
        .collect())
}

/// `rbd export`.
pub async fn export(ctx: &Ctx, image: &str, path: &str, format: Option<u32>) -> CmdResult {
    let spec = ctx.spec(image)?;
    match format {
        None | Some(1) => {}
        Some(2) => return super::v2::export(ctx, &spec, path).await,
        Some(n) => {
            return Err(CmdError::new(
                Errno::EINVAL,
                format!("invalid export format {n}: only 1 (raw) and 2 are supported"),
            ))
        }
    }
    let img = ctx.open(&spec, true).await?;
    let size = img.size();
    let ext = data_extents(&img, None)
        .await
        .map_err(|e| CmdError::rbd("export error", &e))?;
    let p = Progress::new(ctx.g.progress(), "Exporting image", size);
    let r = if path == "-" {
        let out = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, out.lock());
        export_stream(&img, &ext, size, &mut w, &p).await
    } else {
        export_file(&img, &ext, size, path, &p).await
    };
    p.finish(r)
}

async fn export_file(
    img: &Image,
    ext: &[(u64, u64, bool)],
    size: u64,
    path: &str,
    p: &Progress,
) -> CmdResult {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("export error", &e))?;
    // Holes are left unwritten: set_len makes them read as zeros and keeps
    // the file sparse.
    f.set_len(size).map_err(|e| io_err("export error", &e))?;
    for &(off, len, exists) in ext {
        if !exists {
            continue;
        }
        let mut o = off;
        while o < off + len {
            let n = CHUNK.min(off + len - o);
            let data = img
                .read(o, n)
                .await
                .map_err(|e| CmdError::rbd("export error", &e))?;
            // Skip zero blocks so sparse regions stay sparse.
            let mut i = 0;
            while i < data.len() {
                let e = (i + SPARSE_BLOCK).min(data.len());
                if data[i..e].iter().any(|&b| b != 0) {
                    f.seek(SeekFrom::Start(o + i as u64))
                        .and_then(|_| f.write_all(&data[i..e]))
                        .map_err(|e| io_err("export error", &e))?;
                }
                i = e;
            }
            o += n;
            p.set(o);
        }
    }
    f.sync_all().map_err(|e| io_err("export error", &e))
}

async fn export_stream(
    img: &Image,
    ext: &[(u64, u64, bool)],
    size: u64,
    w: &mut impl Write,
    p: &Progress,
) -> CmdResult {
    let zeros = vec![0u8; CHUNK as usize];
    let mut pos = 0u64;
    let write_zeros = |w: &mut dyn Write, mut n: u64| -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(CHUNK);
            w.write_all(&zeros[..k as usize])?;
            n -= k;
        }
        Ok(())
    };
    for &(off, len, exists) in ext {
        if !exists {
            continue;
        }
        write_zeros(w, off - pos).map_err(|e| io_err("export error", &e))?;
        let mut o = off;
        while o < off + len {
            let n = CHUNK.min(off + len - o);
            let data = img
                .read(o, n)
                .await
                .map_err(|e| CmdError::rbd("export error", &e))?;
            w.write_all(&data).map_err(|e| io_err("export error", &e))?;
            o += n;
            p.set(o);
        }
        pos = off + len;
    }
    write_zeros(w, size - pos).map_err(|e| io_err("export error", &e))?;
    w.flush().map_err(|e| io_err("export error", &e))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `rbd import`.
pub async fn import(
    ctx: &Ctx,
    path: &str,
    dest: Option<&str>,
    dest_pool: Option<&str>,
    format: Option<u32>,
    c: &CreateArgs,
) -> CmdResult {
    if let Some(n) = format.filter(|n| *n != 1 && *n != 2) {
        return Err(CmdError::new(
            Errno::EINVAL,
            format!("invalid export format {n}: only 1 (raw) and 2 are supported"),
        ));
    }
    let dest = match dest {
        Some(d) => d.to_string(),
        None if path == "-" => {
            return Err(CmdError::new(
                Errno::EINVAL,
                "destination image name was not specified",
            ))
        }
        None => std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let mut spec = ctx.spec(&dest)?;
    if let Some(p) = dest_pool {
        if !dest.contains('/') {
            spec.pool = p.to_string();
        }
    }
    let opts = create_opts(ctx, c, "import failed")?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    if format == Some(2) {
        return super::v2::import(ctx, &io, &spec.image, path, opts).await;
    }
    let (mut reader, known): (Box<dyn Read>, Option<u64>) = if path == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(path).map_err(|e| io_err("import failed", &e))?;
        let len = f.metadata().map_err(|e| io_err("import failed", &e))?.len();
        (Box::new(f), Some(len))
    };
    ctx.rbd
        .create(&io, &spec.image, known.unwrap_or(0), &opts)
        .await
        .map_err(|e| CmdError::rbd("import failed", &e))?;
    let img = ctx.open_in(&io, &spec.image, None, false).await?;
    let p = Progress::new(ctx.g.progress(), "Importing image", known.unwrap_or(0));
    let r = import_data(&img, &mut reader, known, &p).await;
    match r {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            // Do not leave a half-imported image behind.
            // Closed, not just dropped: a drop releases the lock and the
            // watch in the background, and the removal would find them.
            let _ = img.close().await;
            drop(img);
            if let Err(re) = ctx.rbd.remove(&io, &spec.image).await {
                eprintln!(
                    "rbd: could not remove the half-imported image {}: {re}",
                    spec.image
                );
            }
            Err(e)
        }
    }
}

async fn import_data(img: &Image, r: &mut dyn Read, known: Option<u64>, p: &Progress) -> CmdResult {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0u64;
    let mut cap = img.size();
    loop {
        let n = read_full(r, &mut buf).map_err(|e| io_err("import failed", &e))?;
        if n == 0 {
            break;
        }
        if known.is_none() && off + n as u64 > cap {
            // Unknown length (stdin): grow in big steps, trim at the end.
            cap = (off + n as u64).next_multiple_of(1 << 30);
            img.resize(cap)
                .await
                .map_err(|e| CmdError::rbd("import failed", &e))?;
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        img.write_sparse(off, data)
            .await
            .map_err(|e| CmdError::rbd("import failed", &e))?;
        off += n as u64;
        p.set(off);
        if n < buf.len() {
            break;
        }
    }
    if known.is_none() && off != img.size() {
        img.resize(off)
            .await
            .map_err(|e| CmdError::rbd("import failed", &e))?;
    }
    img.flush()
        .await
        .map_err(|e| CmdError::rbd("import failed", &e))
}

/// `rbd cp`, and `rbd deep cp` when `deep` is `Some(flatten)`.
pub async fn cp(ctx: &Ctx, src: &str, dest: &str, c: &CreateArgs, deep: Option<bool>) -> CmdResult {
    let s = ctx.spec(src)?;
    let d = dest_spec(ctx, &s, dest)?;
    let src_img = ctx.open(&s, true).await?;
    let what = if deep.is_some() {
        "deep copy failed"
    } else {
        "copy failed"
    };
    let co = create_opts(ctx, c, what)?;
    let opts = CopyOptions {
        order: co.order,
        features: co.features,
        flatten: deep.unwrap_or(false),
    };
    let dio = ctx.ioctx(&d.pool, &d.namespace).await?;
    let label = if deep.is_some() {
        "Image deep copy"
    } else {
        "Image copy"
    };
    let p = Progress::new(ctx.g.progress(), label, src_img.size());
    let progress = |done: u64, total: u64| {
        p.set_length(total);
        p.set(done);
    };
    let r = match deep {
        None => {
            ctx.rbd
                .copy(&src_img, &dio, &d.image, &opts, progress)
                .await
        }
        Some(_) => {
            ctx.rbd
                .deep_copy(&src_img, &dio, &d.image, &opts, progress)
                .await
        }
    };
    p.finish(r.map_err(|e| CmdError::rbd(what, &e)))
}

/// `rbd diff`.
pub async fn diff(ctx: &Ctx, image: &str, from: Option<&str>, whole_object: bool) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, true).await?;
    let opts = DiffOptions {
        from_snap: from.map(str::to_string),
        include_parent: true,
        whole_object,
    };
    let ext = img
        .diff(0, img.size(), &opts)
        .await
        .map_err(|e| CmdError::rbd("diff error", &e))?;
    if ctx.g.json() {
        let v: Vec<Value> = ext
            .iter()
            .map(|e| {
                json!({"offset": e.offset, "length": e.len,
                "exists": if e.exists {"true"} else {"false"}})
            })
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    let mut t = Table::new(&[
        ("Offset", Align::Left),
        ("Length", Align::Left),
        ("Type", Align::Left),
    ]);
    for e in &ext {
        t.row(vec![
            e.offset.to_string(),
            e.len.to_string(),
            if e.exists { "data" } else { "zero" }.into(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd export-diff`.
pub async fn export_diff(
    ctx: &Ctx,
    image: &str,
    path: &str,
    from: Option<&str>,
    _whole_object: bool,
) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, true).await?;
    if let Some(f) = from {
        // A missing start snapshot is Ceph's ENOENT, before any output.
        let head = ctx.open(&ImageSpecNoSnap::of(&spec), true).await?;
        head.snap_info(f)
            .await
            .map_err(|e| CmdError::rbd("export-diff error", &e))?;
    }
    let size = img.size();
    let ext = data_extents(&img, from)
        .await
        .map_err(|e| CmdError::rbd("export-diff error", &e))?;
    let p = Progress::new(ctx.g.progress(), "Exporting image", size);
    let mut out: Box<dyn Write> = if path == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        ))
    } else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_err("export-diff error", &e))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    let r = write_diff(&img, &spec.snap, from, size, &ext, &mut out, &p).await;
    p.finish(r)
}

/// The image spec without its snapshot (to reach the head).
struct ImageSpecNoSnap;

impl ImageSpecNoSnap {
    fn of(s: &quarry_common::spec::ImageSpec) -> quarry_common::spec::ImageSpec {
        let mut h = s.clone();
        h.snap = None;
        h
    }
}

async fn write_diff(
    img: &Image,
    to: &Option<String>,
    from: Option<&str>,
    size: u64,
    ext: &[(u64, u64, bool)],
    w: &mut dyn Write,
    p: &Progress,
) -> CmdResult {
    let ioe = |e: std::io::Error| io_err("export-diff error", &e);
    w.write_all(DIFF_BANNER).map_err(ioe)?;
    if let Some(f) = from {
        w.write_all(&diff_name_record(DIFF_FROM_SNAP, f.as_bytes()))
            .map_err(ioe)?;
    }
    if let Some(t) = to {
        w.write_all(&diff_name_record(DIFF_TO_SNAP, t.as_bytes()))
            .map_err(ioe)?;
    }
    w.write_all(&diff_size_record(size)).map_err(ioe)?;
    for &(off, len, exists) in ext {
        if !exists {
            w.write_all(&diff_extent_record(DIFF_ZERO, off, len))
                .map_err(ioe)?;
            continue;
        }
        let mut o = off;
        while o < off + len {
            let n = CHUNK.min(off + len - o);
            let data = img
                .read(o, n)
                .await
                .map_err(|e| CmdError::rbd("export-diff error", &e))?;
            w.write_all(&diff_extent_record(DIFF_WRITE, o, data.len() as u64))
                .map_err(ioe)?;
            w.write_all(&data).map_err(ioe)?;
            o += n;
            p.set(o);
        }
    }
    w.write_all(&[DIFF_END]).map_err(ioe)?;
    w.flush().map_err(ioe)
}

fn bad_stream(why: &str) -> CmdError {
    CmdError::new(Errno::EINVAL, format!("import-diff failed: {why}"))
}

/// import-diff's words for a stream it cannot read.
fn import_stream_err(e: DiffReadError) -> CmdError {
    match e {
        DiffReadError::Truncated => bad_stream("truncated diff stream"),
        DiffReadError::NameTooLong => bad_stream("snapshot name too long"),
        DiffReadError::Io(e) => io_err("import-diff failed", &e),
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> CmdResult {
    diff_read_exact(r, buf).map_err(import_stream_err)
}

fn read_u64(r: &mut dyn Read) -> CmdResult<u64> {
    diff_read_u64(r).map_err(import_stream_err)
}

fn read_name(r: &mut dyn Read) -> CmdResult<String> {
    let v = diff_read_name(r).map_err(import_stream_err)?;
    String::from_utf8(v).map_err(|_| bad_stream("snapshot name is not UTF-8"))
}

/// `rbd import-diff`.
pub async fn import_diff(ctx: &Ctx, path: &str, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&ImageSpecNoSnap::of(&spec), false).await?;
    let mut r: Box<dyn Read> = if path == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|e| io_err("import-diff failed", &e))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let mut banner = [0u8; DIFF_BANNER.len()];
    read_exact(&mut r, &mut banner)?;
    if banner != DIFF_BANNER {
        return Err(
            CmdError::new(Errno::EINVAL, "invalid or unexpected diff banner")
                .then(format!("import-diff failed: {}", Errno::EINVAL)),
        );
    }
    let p = Progress::new(ctx.g.progress(), "Importing image diff", img.size());
    let mut to: Option<String> = None;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let mut tag = [0u8; 1];
        read_exact(&mut r, &mut tag)?;
        match tag[0] {
            DIFF_FROM_SNAP => {
                let from = read_name(&mut r)?;
                if !img.snap_exists(&from).await.unwrap_or(false) {
                    return Err(CmdError::new(
                        Errno::ENOENT,
                        format!("start snapshot '{from}' does not exist in the image, aborting"),
                    )
                    .then(format!("import-diff failed: {}", Errno::ENOENT)));
                }
            }
            DIFF_TO_SNAP => {
                let t = read_name(&mut r)?;
                if img.snap_exists(&t).await.unwrap_or(false) {
                    return Err(CmdError::new(
                        Errno::EEXIST,
                        format!("end snapshot '{t}' already exists, aborting"),
                    )
                    .then(format!("import-diff failed: {}", Errno::EEXIST)));
                }
                to = Some(t);
            }
            DIFF_IMAGE_SIZE => {
                let size = read_u64(&mut r)?;
                if size != img.size() {
                    img.resize(size)
                        .await
                        .map_err(|e| CmdError::rbd("import-diff failed", &e))?;
                }
            }
            DIFF_WRITE => {
                let off = read_u64(&mut r)?;
                let mut len = read_u64(&mut r)?;
                let mut o = off;
                // Stream the record through a bounded buffer: the length
                // comes from the file and must not size an allocation.
                while len > 0 {
                    let n = len.min(CHUNK) as usize;
                    read_exact(&mut r, &mut buf[..n])?;
                    img.write(o, Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .map_err(|e| CmdError::rbd("import-diff failed", &e))?;
                    o += n as u64;
                    len -= n as u64;
                    p.set(o);
                }
            }
            DIFF_ZERO => {
                let off = read_u64(&mut r)?;
                let len = read_u64(&mut r)?;
                img.discard(off, len)
                    .await
                    .map_err(|e| CmdError::rbd("import-diff failed", &e))?;
            }
            DIFF_END => break,
            t => return Err(bad_stream(&format!("unknown record tag 0x{t:02x}"))),
        }
    }
    img.flush()
        .await
        .map_err(|e| CmdError::rbd("import-diff failed", &e))?;
    if let Some(t) = to {
        img.snap_create(&t)
            .await
            .map_err(|e| CmdError::rbd("import-diff failed", &e))?;
    }
    p.done();
    Ok(())
}

/// `rbd bench`.
#[allow(clippy::too_many_arguments)]
pub async fn bench(
    ctx: &Ctx,
    image: &str,
    io_type: &str,
    io_size: &str,
    io_threads: u32,
    io_total: &str,
    io_pattern: &str,
) -> CmdResult {
    let write = match io_type {
        "write" => true,
        "read" => false,
        _ => {
            return Err(CmdError::new(
                Errno::EINVAL,
                "--io-type must be read or write",
            ))
        }
    };
    let rand = match io_pattern {
        "rand" | "random" => true,
        "seq" | "sequential" => false,
        _ => {
            return Err(CmdError::new(
                Errno::EINVAL,
                "--io-pattern must be rand or seq",
            ))
        }
    };
    let io_size = size_arg("--io-size", io_size, SizeUnit::Bytes)?;
    let total = size_arg("--io-total", io_total, SizeUnit::Bytes)?;
    if io_size == 0 || io_size > 64 << 20 {
        return Err(CmdError::new(
            Errno::EINVAL,
            "--io-size must be between 1 B and 64 MiB",
        ));
    }
    if io_threads == 0 || io_threads > 1024 {
        return Err(CmdError::new(
            Errno::EINVAL,
            "--io-threads must be between 1 and 1024",
        ));
    }
    let spec = ctx.spec(image)?;
    let img = Arc::new(ctx.open(&spec, !write).await?);
    let size = img.size();
    if io_size > size {
        return Err(CmdError::new(
            Errno::EINVAL,
            "io-size must be less than the image size",
        ));
    }
    let ops_total = total / io_size;
    let slots = size / io_size;
    println!(
        "bench  type {} io_size {} io_threads {} bytes {} pattern {}",
        io_type,
        io_size,
        io_threads,
        total,
        if rand { "random" } else { "sequential" }
    );
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let data = Bytes::from(vec![0x5au8; io_size as usize]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..io_threads {
        let (img, next, done, stop, data) = (
            Arc::clone(&img),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&stop),
            data.clone(),
        );
        let mut x: u64 =
            0x9e37_79b9_7f4a_7c15 ^ (u64::from(t) + 1) ^ start.elapsed().as_nanos() as u64;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops_total || stop.load(Ordering::Relaxed) {
                    return Ok::<(), quarry_rbd::RbdError>(());
                }
                let slot = if rand {
                    // xorshift64: cheap and good enough to scatter offsets.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % slots
                } else {
                    i % slots
                };
                let off = slot * io_size;
                let r = if write {
                    img.write(off, data.clone()).await.map(|_| ())
                } else {
                    img.read(off, io_size).await.map(|_| ())
                };
                if let Err(e) = r {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    println!("  SEC       OPS   OPS/SEC   BYTES/SEC");
    let reporter = {
        let done = Arc::clone(&done);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sec = 0u64;
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                sec += 1;
                let d = done.load(Ordering::Relaxed);
                let rate = (d - last) as f64;
                println!(
                    "{sec:>5}  {d:>8}  {rate:>8.2}  {:>10}/s",
                    format_size((rate * io_size as f64) as u64)
                );
                last = d;
            }
        })
    };
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(CmdError::rbd("bench failed", &e));
            }
            Err(e) => {
                first_err.get_or_insert(CmdError::new(Errno::EIO, format!("bench failed: {e}")));
            }
        }
    }
    if write {
        if let Err(e) = img.flush().await {
            first_err.get_or_insert(CmdError::rbd("bench failed", &e));
        }
    }
    stop.store(true, Ordering::Relaxed);
    reporter.abort();
    if let Some(e) = first_err {
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let ops = done.load(Ordering::Relaxed);
    println!(
        "elapsed: {}   ops: {}   ops/sec: {:.2}   bytes/sec: {}/s",
        secs as u64,
        ops,
        ops as f64 / secs,
        format_size((ops as f64 * io_size as f64 / secs) as u64)
    );
    Ok(())
}
