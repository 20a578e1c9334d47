//! `rbd export|import --export-format 2`: Ceph's documented full-image
//! stream with snapshots (doc/dev/rbd-export.rst, rbd-diff.rst).
//!
//! Layout: the banner `rbd image v2\n`; header records, each a one-byte tag,
//! an le64 payload length and the payload (`O` order, `T` features, `U`
//! stripe unit, `C` stripe count, and one `M` per image-meta key: le32 key
//! length + key, le32 value length + value; unknown tags are skipped by
//! length); `E`; the banner `rbd image diffs v2\n` and an le64 count of
//! diffs; then that many `rbd diff v2\n` streams: the first from nothing to
//! the oldest snapshot, each next one from the previous snapshot, the last
//! to the exported head (no `t` record). Diff v2 records carry the same le64
//! payload length after the tag (`f`/`t` le32 name length + name, `p` one
//! byte: the `t` snapshot is protected, `s` le64 size, `w` le64 offset +
//! le64 length + data, `z` le64 offset + le64 length), and end with a bare
//! `e`. (Streams from Quarry before the diffs banner and `M`/`p` records
//! existed are still imported.)

use std::io::{Read, Write};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rbd::{CreateOptions, Image, IoCtx};

use super::{CmdError, CmdResult, Ctx, Progress};

/// Banner of the full-image stream.
const IMAGE_BANNER: &[u8] = b"rbd image v2\n";
/// Banner before the diff count.
const DIFFS_BANNER: &[u8] = b"rbd image diffs v2\n";
/// Banner of each diff inside it.
const DIFF_BANNER_V2: &[u8] = b"rbd diff v2\n";
/// Bytes moved per engine call.
const CHUNK: u64 = 4 << 20;
/// Longest header/name payload accepted from a stream (bounds allocation).
const MAX_META: u64 = 1 << 16;
/// Longest image-meta record accepted from a stream.
const MAX_IMAGE_META: u64 = 1 << 20;
/// Most image-meta records accepted from a stream.
const MAX_IMAGE_META_KEYS: usize = 1 << 16;
/// Most diffs (snapshots + head) accepted from a stream.
const MAX_DIFFS: u64 = 1 << 20;

fn ioe(what: &'static str) -> impl Fn(std::io::Error) -> CmdError {
    move |e| {
        let errno = e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO);
        CmdError::errno(what, errno)
    }
}

fn rec(w: &mut dyn Write, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&[tag])?;
    w.write_all(&(payload.len() as u64).to_le_bytes())?;
    w.write_all(payload)
}

fn name_payload(name: &str) -> Vec<u8> {
    let mut v = (name.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v
}

/// One diff v2 stream: `img` is the end state, `from` the start snapshot.
async fn write_diff_v2(
    img: &Image,
    from: Option<&str>,
    to: Option<(&str, bool)>,
    w: &mut dyn Write,
    p: &Progress,
    done: &mut u64,
) -> CmdResult {
    let e = ioe("export error");
    w.write_all(DIFF_BANNER_V2).map_err(&e)?;
    if let Some(f) = from {
        rec(w, b'f', &name_payload(f)).map_err(&e)?;
    }
    if let Some((t, protected)) = to {
        rec(w, b't', &name_payload(t)).map_err(&e)?;
        rec(w, b'p', &[u8::from(protected)]).map_err(&e)?;
    }
    rec(w, b's', &img.size().to_le_bytes()).map_err(&e)?;
    let opts = quarry_rbd::DiffOptions {
        from_snap: from.map(str::to_string),
        include_parent: from.is_none(),
        whole_object: false,
    };
    let ext = img
        .diff(0, img.size(), &opts)
        .await
        .map_err(|e| CmdError::rbd("export error", &e))?;
    for x in ext {
        if !x.exists {
            let mut v = x.offset.to_le_bytes().to_vec();
            v.extend_from_slice(&x.len.to_le_bytes());
            rec(w, b'z', &v).map_err(&e)?;
            continue;
        }
        let mut o = x.offset;
        while o < x.offset + x.len {
            let n = CHUNK.min(x.offset + x.len - o);
            let data = img
                .read(o, n)
                .await
                .map_err(|e| CmdError::rbd("export error", &e))?;
            w.write_all(b"w").map_err(&e)?;
            w.write_all(&(16 + data.len() as u64).to_le_bytes())
                .map_err(&e)?;
            w.write_all(&o.to_le_bytes()).map_err(&e)?;
            w.write_all(&(data.len() as u64).to_le_bytes())
                .map_err(&e)?;
            w.write_all(&data).map_err(&e)?;
            o += n;
            *done += n;
            p.set(*done);
        }
    }
    w.write_all(b"e").map_err(&e)
}

/// `rbd export --export-format 2 IMAGE[@SNAP] PATH|-`: every snapshot (up to
/// the one named, if any) and the end state.
pub async fn export(ctx: &Ctx, spec: &quarry_common::spec::ImageSpec, path: &str) -> CmdResult {
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    let head = ctx.open_in(&io, &spec.image, None, true).await?;
    let mut snaps = head
        .snap_list()
        .await
        .map_err(|e| CmdError::rbd("export error", &e))?;
    snaps.sort_by_key(|s| s.id);
    let end = ctx
        .open_in(&io, &spec.image, spec.snap.as_deref(), true)
        .await?;
    if let Some(s) = &spec.snap {
        // Exporting a snapshot: the older snapshots, then it as the end state.
        let Some(pos) = snaps.iter().position(|x| &x.name == s) else {
            return Err(CmdError::errno("export error", Errno::ENOENT));
        };
        snaps.truncate(pos);
    }
    let st = head.stat();
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
            .map_err(ioe("export error"))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    let e = ioe("export error");
    let w: &mut dyn Write = &mut out;
    w.write_all(IMAGE_BANNER).map_err(&e)?;
    rec(w, b'O', &u64::from(st.order).to_le_bytes()).map_err(&e)?;
    rec(w, b'T', &st.features.to_le_bytes()).map_err(&e)?;
    rec(w, b'U', &st.obj_size.to_le_bytes()).map_err(&e)?;
    rec(w, b'C', &1u64.to_le_bytes()).map_err(&e)?;
    let meta = head
        .metadata_list("", 0)
        .await
        .map_err(|e| CmdError::rbd("export error", &e))?;
    for (k, v) in &meta {
        let mut pl = (k.len() as u32).to_le_bytes().to_vec();
        pl.extend_from_slice(k.as_bytes());
        pl.extend_from_slice(&(v.len() as u32).to_le_bytes());
        pl.extend_from_slice(v);
        rec(w, b'M', &pl).map_err(&e)?;
    }
    w.write_all(b"E").map_err(&e)?;
    w.write_all(DIFFS_BANNER).map_err(&e)?;
    w.write_all(&(snaps.len() as u64 + 1).to_le_bytes())
        .map_err(&e)?;
    let total: u64 = snaps.iter().map(|s| s.size).sum::<u64>() + end.size();
    let p = Progress::new(ctx.g.progress(), "Exporting image", total);
    let mut done = 0;
    let mut prev: Option<String> = None;
    let r = async {
        for s in &snaps {
            let img = ctx.open_in(&io, &spec.image, Some(&s.name), true).await?;
            let to = Some((s.name.as_str(), s.protected));
            write_diff_v2(&img, prev.as_deref(), to, w, &p, &mut done).await?;
            prev = Some(s.name.clone());
        }
        write_diff_v2(&end, prev.as_deref(), None, w, &p, &mut done).await?;
        w.flush().map_err(&e)
    }
    .await;
    p.finish(r)
}

fn bad(why: &str) -> CmdError {
    CmdError::new(
        Errno::EINVAL,
        format!("invalid export-format 2 stream: {why}"),
    )
    .then(format!("import failed: {}", Errno::EINVAL))
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> CmdResult {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad("truncated")
        } else {
            ioe("import failed")(e)
        }
    })
}

fn u8_(r: &mut dyn Read) -> CmdResult<u8> {
    let mut b = [0u8; 1];
    read_exact(r, &mut b)?;
    Ok(b[0])
}

fn u64_(r: &mut dyn Read) -> CmdResult<u64> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A bounded metadata payload.
fn payload(r: &mut dyn Read, len: u64) -> CmdResult<Vec<u8>> {
    if len > MAX_META {
        return Err(bad("record too long"));
    }
    let mut v = vec![0u8; len as usize];
    read_exact(r, &mut v)?;
    Ok(v)
}

fn le64_of(v: &[u8], what: &str) -> CmdResult<u64> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| bad(&format!("{what} record is not 8 bytes")))?;
    Ok(u64::from_le_bytes(b))
}

/// An `M` record: le32 key length + key, le32 value length + value.
fn image_meta_of(v: &[u8]) -> CmdResult<(String, Vec<u8>)> {
    let field = |at: usize| -> CmdResult<(&[u8], usize)> {
        let n = v
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("short image-meta record"))?;
        let end = at + 4 + n;
        let bytes = v
            .get(at + 4..end)
            .ok_or_else(|| bad("image-meta length mismatch"))?;
        Ok((bytes, end))
    };
    let (key, end) = field(0)?;
    let (value, end) = field(end)?;
    if end != v.len() {
        return Err(bad("image-meta length mismatch"));
    }
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad("image-meta key is not UTF-8"))?;
    Ok((key, value.to_vec()))
}

fn name_of(v: &[u8]) -> CmdResult<String> {
    if v.len() < 4 {
        return Err(bad("short snapshot name record"));
    }
    let n = u32::from_le_bytes([v[0], v[1], v[2], v[3]]) as usize;
    if v.len() != 4 + n {
        return Err(bad("snapshot name length mismatch"));
    }
    String::from_utf8(v[4..].to_vec()).map_err(|_| bad("snapshot name is not UTF-8"))
}

/// `rbd import --export-format 2 PATH|- IMAGE`. The image is removed again
/// (with its snapshots) if the stream is bad.
pub async fn import(
    ctx: &Ctx,
    io: &IoCtx,
    name: &str,
    path: &str,
    mut opts: CreateOptions,
) -> CmdResult {
    let mut r: Box<dyn Read> = if path == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(ioe("import failed"))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let r: &mut dyn Read = &mut r;
    let mut banner = [0u8; IMAGE_BANNER.len()];
    read_exact(r, &mut banner)?;
    if banner != IMAGE_BANNER {
        return Err(bad("missing 'rbd image v2' banner"));
    }
    let mut meta: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        match u8_(r)? {
            b'E' => break,
            b'M' => {
                let len = u64_(r)?;
                if len > MAX_IMAGE_META || meta.len() >= MAX_IMAGE_META_KEYS {
                    return Err(bad("image-meta record too long or too many"));
                }
                let mut v = vec![0u8; len as usize];
                read_exact(r, &mut v)?;
                meta.push(image_meta_of(&v)?);
            }
            tag => {
                let len = u64_(r)?;
                let v = payload(r, len)?;
                match tag {
                    // Command-line options win over the stream's, as Ceph.
                    b'O' if opts.order == 0 => {
                        opts.order = u8::try_from(le64_of(&v, "order")?)
                            .map_err(|_| bad("order out of range"))?;
                    }
                    b'T' if opts.features.is_none() => {
                        // Only features Quarry can create (no journaling/data-pool).
                        let f = le64_of(&v, "features")?;
                        opts.features = Some(f & quarry_rbd::FEATURES_DEFAULT);
                    }
                    b'U' | b'C' | b'O' | b'T' => {}
                    _ => {} // unknown: skipped by its length, as the format allows
                }
            }
        }
    }
    // Ceph writes a banner before the count; Quarry's first streams did not.
    let mut first = [0u8; 8];
    read_exact(r, &mut first)?;
    let ndiffs = if first == DIFFS_BANNER[..8] {
        let mut rest = [0u8; DIFFS_BANNER.len() - 8];
        read_exact(r, &mut rest)?;
        if rest != DIFFS_BANNER[8..] {
            return Err(bad("missing 'rbd image diffs v2' banner"));
        }
        u64_(r)?
    } else {
        u64::from_le_bytes(first)
    };
    if ndiffs == 0 || ndiffs > MAX_DIFFS {
        return Err(bad("bad diff count"));
    }
    ctx.rbd
        .create(io, name, 0, &opts)
        .await
        .map_err(|e| CmdError::rbd("import failed", &e))?;
    let img = ctx.open_in(io, name, None, false).await?;
    let p = Progress::new(ctx.g.progress(), "Importing image", 0);
    let res = async {
        for _ in 0..ndiffs {
            apply_diff_v2(&img, r).await?;
        }
        for (k, v) in &meta {
            img.metadata_set(k, Bytes::copy_from_slice(v))
                .await
                .map_err(|e| CmdError::rbd("failed to set image meta", &e))?;
        }
        img.flush()
            .await
            .map_err(|e| CmdError::rbd("import failed", &e))
    }
    .await;
    match res {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            // Leave nothing half-imported behind.
            if let Ok(snaps) = img.snap_list().await {
                for s in snaps {
                    if s.protected {
                        let _ = img.snap_unprotect(&s.name).await;
                    }
                    let _ = img.snap_remove(&s.name).await;
                }
            }
            // Closed, not just dropped: a drop releases the lock and the
            // watch in the background, and the removal would find them.
            let _ = img.close().await;
            drop(img);
            if let Err(re) = ctx.rbd.remove(io, name).await {
                eprintln!("rbd: could not remove the half-imported image {name}: {re}");
            }
            Err(e)
        }
    }
}

async fn apply_diff_v2(img: &Image, r: &mut dyn Read) -> CmdResult {
    let mut banner = [0u8; DIFF_BANNER_V2.len()];
    read_exact(r, &mut banner)?;
    if banner != DIFF_BANNER_V2 {
        return Err(bad("missing 'rbd diff v2' banner"));
    }
    let fail = |e: quarry_rbd::RbdError| CmdError::rbd("import failed", &e);
    let mut to: Option<String> = None;
    let mut protect = false;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let tag = u8_(r)?;
        if tag == b'e' {
            break;
        }
        let len = u64_(r)?;
        match tag {
            b'w' => {
                let off = u64_(r)?;
                let mut n = u64_(r)?;
                if len != 16 + n {
                    return Err(bad("write record length mismatch"));
                }
                let mut o = off;
                // Bounded buffer: the length comes from the stream.
                while n > 0 {
                    let k = n.min(CHUNK) as usize;
                    read_exact(r, &mut buf[..k])?;
                    img.write(o, Bytes::copy_from_slice(&buf[..k]))
                        .await
                        .map_err(fail)?;
                    o += k as u64;
                    n -= k as u64;
                }
            }
            b'z' => {
                let v = payload(r, len)?;
                if v.len() != 16 {
                    return Err(bad("zero record is not 16 bytes"));
                }
                let off = le64_of(&v[..8], "zero offset")?;
                let n = le64_of(&v[8..], "zero length")?;
                img.discard(off, n).await.map_err(fail)?;
            }
            b's' => {
                let size = le64_of(&payload(r, len)?, "size")?;
                if size != img.size() {
                    img.resize(size).await.map_err(fail)?;
                }
            }
            b'f' => {
                let from = name_of(&payload(r, len)?)?;
                if !img.snap_exists(&from).await.unwrap_or(false) {
                    return Err(bad(&format!("start snapshot '{from}' is not in the image")));
                }
            }
            b't' => to = Some(name_of(&payload(r, len)?)?),
            b'p' => {
                let v = payload(r, len)?;
                protect = v.first().is_some_and(|b| *b != 0);
            }
            _ => {
                // Unknown record: skip its payload in bounded steps.
                let mut left = len;
                while left > 0 {
                    let k = left.min(CHUNK) as usize;
                    read_exact(r, &mut buf[..k])?;
                    left -= k as u64;
                }
            }
        }
    }
    if let Some(t) = to {
        img.flush().await.map_err(fail)?;
        img.snap_create(&t).await.map_err(fail)?;
        if protect {
            img.snap_protect(&t).await.map_err(fail)?;
        }
    }
    Ok(())
}
