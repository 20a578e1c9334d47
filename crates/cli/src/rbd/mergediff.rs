//! `rbd merge-diff`: two `rbd diff v1` streams, the first from snapshot A
//! to B and the second from B to C, into one from A to C. Local files only:
//! no cluster is contacted.
//!
//! Ceph's backup tools compare the merged file byte for byte, so the output
//! is the one Ceph 16's tool writes, not merely an equivalent one:
//!
//! - header: the banner, `f` (the first diff's start snapshot, when it has
//!   one), `t` (the second's end snapshot, when it has one), `s` (the
//!   second's size);
//! - the second diff's records are copied whole; the first's are copied
//!   only where no record of the second covers them, cut into the pieces
//!   between the second's records (never coalesced), and nothing of the
//!   first beyond the second's size;
//! - when the image grew from B to C, the range from B's size to C's is a
//!   zero record in the first diff's stead (A may have had data there);
//! - the records of both inputs must come in ascending offset order, without
//!   overlap, and each must lie within its diff's size.
//!
//! Refusals (all before or while writing; the output file is removed on any
//! failure, exit status = the errno): the first diff's end snapshot is not
//! the second's start (`EINVAL`), a banner other than `rbd diff v1`
//! (`EINVAL`: Ceph's v2 diffs are refused here too), a stream cut short
//! (`EDOM`), an unknown or misplaced record tag, an empty or out-of-order
//! extent (`EOPNOTSUPP`), a snapshot name over 4096 bytes (`EINVAL`).
//! Ceph's tool aborts on an assertion when the first diff has a record
//! beyond its own size while the image did not shrink; Quarry refuses that
//! input with `EOPNOTSUPP` instead.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use quarry_common::Errno;

use super::xfer::{
    diff_extent_record, diff_name_record, diff_read_exact, diff_read_name, diff_read_u64,
    diff_size_record, DiffReadError, CHUNK, DIFF_BANNER, DIFF_END, DIFF_FROM_SNAP, DIFF_IMAGE_SIZE,
    DIFF_TO_SNAP, DIFF_WRITE, DIFF_ZERO,
};
use super::{CmdError, CmdResult, Progress};

/// Output buffer; the records are written through it in order.
const OUT_BUF: usize = 1 << 20;

/// A failure: `rbd: `-prefixed lines and the exit code (an errno, which
/// for I/O errors is the system's own, whatever it is).
fn fail(code: i32, line: impl Into<String>) -> CmdError {
    CmdError {
        lines: vec![line.into()],
        code,
    }
}

/// The exit code for a failed read of a diff stream: `EDOM` for a stream
/// cut short (Ceph's `safe_read_exact`), `EINVAL` for a name too long.
fn read_code(e: &DiffReadError) -> i32 {
    match e {
        DiffReadError::Truncated => Errno::EDOM.code(),
        DiffReadError::NameTooLong => Errno::EINVAL.code(),
        DiffReadError::Io(e) => os_code(e),
    }
}

fn os_code(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(Errno::EIO.code())
}

/// One input diff.
enum Input {
    /// A file: data to drop is skipped by seeking (as Ceph's tool does, so a
    /// skip past the end shows only at the next read).
    File(BufReader<File>),
    /// Standard input (the first diff only): data to drop is read.
    Stdin(BufReader<std::io::Stdin>),
}

impl Input {
    fn reader(&mut self) -> &mut dyn Read {
        match self {
            Input::File(r) => r,
            Input::Stdin(r) => r,
        }
    }

    /// Drop `n` bytes of record data.
    fn skip(&mut self, n: u64, buf: &mut Vec<u8>) -> Result<(), DiffReadError> {
        match self {
            Input::File(r) => {
                let n = i64::try_from(n).map_err(|_| {
                    DiffReadError::Io(std::io::Error::from_raw_os_error(Errno::EINVAL.code()))
                })?;
                r.seek(SeekFrom::Current(n))
                    .map(|_| ())
                    .map_err(DiffReadError::Io)
            }
            Input::Stdin(r) => copy_exact(r, None, n, buf).map_err(|e| match e {
                CopyError::Read(e) => e,
                // No writer, so no write error.
                CopyError::Write(e) => DiffReadError::Io(e),
            }),
        }
    }
}

enum CopyError {
    Read(DiffReadError),
    Write(std::io::Error),
}

/// Move `n` bytes from `r` to `w` (or nowhere) through a bounded buffer:
/// the length comes from the file and must not size an allocation.
fn copy_exact(
    r: &mut dyn Read,
    mut w: Option<&mut dyn Write>,
    mut n: u64,
    buf: &mut Vec<u8>,
) -> Result<(), CopyError> {
    if n > 0 && buf.is_empty() {
        buf.resize(CHUNK as usize, 0);
    }
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        diff_read_exact(r, &mut buf[..k]).map_err(CopyError::Read)?;
        if let Some(w) = w.as_mut() {
            w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        }
        n -= k as u64;
    }
    Ok(())
}

/// What a diff's header records say, and the tag that ended the header
/// (the first data record's, or 0 to read one).
struct Header {
    from: Vec<u8>,
    to: Vec<u8>,
    size: u64,
    tag: u8,
}

/// Banner, then `f`/`t`/`s` records (any order, a repeated one replaces
/// the earlier) up to the first other tag.
fn read_header(r: &mut dyn Read, which: &str) -> CmdResult<Header> {
    let ctx = |e: DiffReadError| {
        fail(
            read_code(&e),
            format!("failed to parse {which} diff header"),
        )
    };
    let mut banner = [0u8; DIFF_BANNER.len()];
    diff_read_exact(r, &mut banner).map_err(ctx)?;
    if banner != DIFF_BANNER {
        // Ceph prints the banner it read as a C string (up to a NUL), and
        // without the tool's prefix.
        let shown = banner.split(|&b| b == 0).next().unwrap_or_default();
        let mut line = b"invalid banner '".to_vec();
        line.extend_from_slice(shown);
        line.extend_from_slice(b"', expected '");
        line.extend_from_slice(DIFF_BANNER);
        line.extend_from_slice(b"'\n");
        let _ = std::io::stderr().write_all(&line);
        return Err(fail(
            Errno::EINVAL.code(),
            format!("failed to parse {which} diff header"),
        ));
    }
    let mut h = Header {
        from: Vec::new(),
        to: Vec::new(),
        size: 0,
        tag: 0,
    };
    loop {
        let mut tag = [0u8; 1];
        diff_read_exact(r, &mut tag).map_err(ctx)?;
        match tag[0] {
            DIFF_FROM_SNAP => h.from = diff_read_name(r).map_err(ctx)?,
            DIFF_TO_SNAP => h.to = diff_read_name(r).map_err(ctx)?,
            DIFF_IMAGE_SIZE => h.size = diff_read_u64(r).map_err(ctx)?,
            t => {
                h.tag = t;
                return Ok(h);
            }
        }
    }
}

/// What remains of an input's current record: `[off, off + len)` of kind
/// `tag` (`w`, `z`, or, past the end, the synthetic tail), `end` once its
/// `e` record was read.
struct Cursor {
    tag: u8,
    off: u64,
    len: u64,
    end: bool,
}

/// The next data record's tag, offset and length (`e`: the end). A tag 0
/// left by the header means "read one": Ceph's tool behaves so, which
/// makes a single NUL byte after the header records harmless.
fn read_record(r: &mut dyn Read, tag: u8, which: &str) -> CmdResult<(u8, u64, u64)> {
    let what = format!("failed to read {which} diff data chunk header");
    let ctx = |e: DiffReadError| fail(read_code(&e), what.clone());
    let tag = if tag == 0 {
        let mut t = [0u8; 1];
        diff_read_exact(r, &mut t).map_err(ctx)?;
        t[0]
    } else {
        tag
    };
    match tag {
        DIFF_END => return Ok((DIFF_END, 0, 0)),
        DIFF_WRITE | DIFF_ZERO => {}
        _ => return Err(fail(Errno::EOPNOTSUPP.code(), what)),
    }
    let off = diff_read_u64(r).map_err(ctx)?;
    let len = diff_read_u64(r).map_err(ctx)?;
    // An empty extent is Ceph's refusal; one that wraps past 2^64 would
    // break the offset arithmetic below.
    if len == 0 || off.checked_add(len).is_none() {
        return Err(fail(Errno::EOPNOTSUPP.code(), what));
    }
    Ok((tag, off, len))
}

/// An argument, unless absent or empty (Ceph: not specified).
fn given(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// `rbd merge-diff <first> <second> <path>` (`--path` before the
/// positional path, as in Ceph); `-` is stdin for the first diff and
/// stdout for the output.
pub fn merge_diff(
    progress: bool,
    first: Option<&str>,
    second: Option<&str>,
    path_name: Option<&str>,
    path_opt: Option<&str>,
) -> CmdResult {
    let not_specified =
        |what: &str| fail(Errno::EINVAL.code(), format!("{what} was not specified"));
    let first = given(first).ok_or_else(|| not_specified("first diff"))?;
    let second = given(second).ok_or_else(|| not_specified("second diff"))?;
    let path = given(path_opt)
        .or(given(path_name))
        .ok_or_else(|| not_specified("path"))?;
    let p = Progress::new(progress, "Merging image diff", 0);
    let r = merge_paths(first, second, path, &p).map_err(|e| e.then("merge-diff error"));
    p.finish(r)
}

fn merge_paths(first: &str, second: &str, path: &str, p: &Progress) -> CmdResult {
    let open = |name: &str| {
        File::open(name)
            .map(|f| BufReader::with_capacity(OUT_BUF, f))
            .map_err(|e| fail(os_code(&e), format!("error opening {name}")))
    };
    let mut f_in = if first == "-" {
        Input::Stdin(BufReader::with_capacity(OUT_BUF, std::io::stdin()))
    } else {
        Input::File(open(first)?)
    };
    // The second diff is read from a file only (Ceph: `-` is a file name).
    let mut s_in = Input::File(open(second)?);
    if path == "-" {
        let mut out = BufWriter::with_capacity(OUT_BUF, std::io::stdout().lock());
        return merge(&mut f_in, &mut s_in, &mut out, p);
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| fail(os_code(&e), format!("error create {path}")))?;
    let mut out = BufWriter::with_capacity(OUT_BUF, file);
    let r = merge(&mut f_in, &mut s_in, &mut out, p).and_then(|()| {
        out.into_inner()
            .map(drop)
            .map_err(|e| fail(os_code(e.error()), "failed to write merged diff"))
    });
    if r.is_err() {
        // Never leave a partial diff that looks like a result.
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Merge the two streams into `out`.
fn merge(f_in: &mut Input, s_in: &mut Input, out: &mut dyn Write, p: &Progress) -> CmdResult {
    let fh = read_header(f_in.reader(), "first")?;
    let sh = read_header(s_in.reader(), "second")?;
    if fh.to != sh.from {
        let _ = writeln!(
            std::io::stderr(),
            "The first TO snapshot must be equal with the second FROM snapshot, aborting"
        );
        // That line was the whole explanation: no `rbd: ` line follows.
        return Err(CmdError {
            lines: Vec::new(),
            code: Errno::EINVAL.code(),
        });
    }

    let mut header = DIFF_BANNER.to_vec();
    if !fh.from.is_empty() {
        header.extend_from_slice(&diff_name_record(DIFF_FROM_SNAP, &fh.from));
    }
    if !sh.to.is_empty() {
        header.extend_from_slice(&diff_name_record(DIFF_TO_SNAP, &sh.to));
    }
    header.extend_from_slice(&diff_size_record(sh.size));
    out.write_all(&header)
        .map_err(|e| fail(os_code(&e), "failed to write merged diff header"))?;

    // Progress runs over both inputs' offsets.
    p.set_length(fh.size.max(sh.size).saturating_mul(2));
    let mut buf = Vec::new();
    let mut f = Cursor {
        tag: fh.tag,
        off: 0,
        len: 0,
        end: false,
    };
    let mut s = Cursor {
        tag: sh.tag,
        off: 0,
        len: 0,
        end: false,
    };
    let chunk_err = |e: CopyError| match e {
        CopyError::Read(e) => fail(read_code(&e), "failed to merge diff chunk"),
        CopyError::Write(e) => fail(os_code(&e), "failed to merge diff chunk"),
    };
    // Copy a record (header, and data for `w`) of `input` to the output.
    let mut emit = |input: &mut Input, tag: u8, off: u64, len: u64, buf: &mut Vec<u8>| {
        out.write_all(&diff_extent_record(tag, off, len))
            .map_err(|e| chunk_err(CopyError::Write(e)))?;
        if tag == DIFF_WRITE {
            copy_exact(input.reader(), Some(&mut *out), len, buf).map_err(chunk_err)?;
        }
        CmdResult::Ok(())
    };

    while !(f.end && s.end) {
        p.set(f.off.saturating_add(s.off));
        if !f.end && f.len == 0 {
            let last = f.off;
            let (tag, off, len) = read_record(f_in.reader(), f.tag, "first")?;
            if tag == DIFF_END {
                // Past B's size: zero up to C's (A may have had data there).
                f = Cursor {
                    tag: DIFF_ZERO,
                    off: fh.size,
                    len: sh.size.saturating_sub(fh.size),
                    end: true,
                };
            } else {
                f = Cursor {
                    tag,
                    off,
                    len,
                    end: false,
                };
            }
            if last > f.off {
                return Err(fail(
                    Errno::EOPNOTSUPP.code(),
                    format!("out-of-order offset from first diff ({last} > {})", f.off),
                ));
            }
        }
        if !s.end && s.len == 0 {
            let last = s.off;
            let (tag, off, len) = read_record(s_in.reader(), s.tag, "second")?;
            if tag == DIFF_END {
                // Past C's size: the first diff's records there are dropped.
                s = Cursor {
                    tag: DIFF_END,
                    off: sh.size,
                    len: fh.size.saturating_sub(sh.size),
                    end: true,
                };
            } else {
                s = Cursor {
                    tag,
                    off,
                    len,
                    end: false,
                };
            }
            if last > s.off {
                return Err(fail(
                    Errno::EOPNOTSUPP.code(),
                    format!("out-of-order offset from second diff ({last} > {})", s.off),
                ));
            }
        }

        // The first diff's part before the second's record: copied.
        if f.len > 0 && f.off < s.off {
            let n = (s.off - f.off).min(f.len);
            emit(f_in, f.tag, f.off, n, &mut buf)?;
            f.off += n;
            f.len -= n;
            if f.len == 0 {
                f.tag = 0;
                continue;
            }
        }
        // The first diff's part under the second's record: dropped.
        let s_stop = s.off + s.len;
        if f.len > 0 && f.off < s_stop {
            let n = (s_stop - f.off).min(f.len);
            if f.tag == DIFF_WRITE {
                f_in.skip(n, &mut buf)
                    .map_err(|e| fail(read_code(&e), "failed to skip first diff data"))?;
            }
            f.off += n;
            f.len -= n;
            if f.len == 0 {
                f.tag = 0;
                continue;
            }
        }
        if s.len > 0 {
            // The second's record (nothing for its tail past C's size).
            if s.tag != DIFF_END {
                emit(s_in, s.tag, s.off, s.len, &mut buf)?;
            }
            s.off += s.len;
            s.len = 0;
            s.tag = 0;
        } else if !(f.end && s.end) {
            // Only a record of the first diff at or past its own size
            // (which is not past C's) gets here; Ceph's tool aborts on an
            // assertion.
            return Err(fail(
                Errno::EOPNOTSUPP.code(),
                format!(
                    "first diff has an extent at offset {} beyond its image size {}",
                    f.off, fh.size
                ),
            ));
        }
    }
    out.write_all(&[DIFF_END])
        .and_then(|()| out.flush())
        .map_err(|e| fail(os_code(&e), "failed to write merged diff"))
}
