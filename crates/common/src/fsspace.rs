//! Free space of the filesystem under a daemon's data directory.

/// Size and available bytes of the filesystem holding `dir`, as `df`
/// counts them (size = used + available to unprivileged users, so the
/// root reserve and blocks the filesystem never hands out do not count as
/// used).
pub fn fs_space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes the struct we pass; the path is a valid
    // NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize;
    let avail = st.f_bavail as u64 * frsize;
    Ok((used + avail, avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_space_and_a_missing_one_is_an_error() {
        let (total, avail) = fs_space(std::path::Path::new("/")).expect("statvfs /");
        assert!(total > 0 && avail <= total, "{total} {avail}");
        let e = fs_space(std::path::Path::new("/nonexistent/quarry-fsspace")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
