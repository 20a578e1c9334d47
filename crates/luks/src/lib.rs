//! LUKS image encryption as librbd does it (`rbd_encryption_format`,
//! `rbd_encryption_load`, `rbd encryption format`).
//!
//! The header is a real LUKS1 or LUKS2 header at the start of the raw
//! image, made and opened by libcryptsetup (loaded with `dlopen` when first
//! needed, so the library has no link-time dependency on it), exactly as
//! librbd does: the header lives in a memory file, libcryptsetup formats or
//! loads it there, and the bytes go to or come from the image. The data
//! area starts at the header's data offset (aligned to the image's object
//! size) and is encrypted with AES-XTS-plain64 in sectors of 512 bytes
//! (LUKS1) or 4096 bytes (LUKS2), the IV being the 512-byte sector number
//! counted from the data area's start, as dm-crypt and QEMU's LUKS driver
//! read it: an image written here opens with `cryptsetup` or
//! `qemu-img --image-opts driver=luks` after `rbd export`, and the reverse.

mod xts;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use xts::Xts;
use zeroize::Zeroizing;

/// Bytes of the start of an image read to find the header's extent:
/// LUKS1's fixed header and LUKS2's two binary headers with their JSON
/// areas at the default size.
pub const PROBE_BYTES: u64 = 32 << 10;

/// The unit of the XTS IV (dm-crypt's plain64 counts 512-byte sectors).
const IV_UNIT: u64 = 512;

/// Which LUKS version (librbd's `rbd_encryption_format_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// LUKS1: 512-byte sectors.
    Luks1,
    /// LUKS2: 4096-byte sectors.
    Luks2,
}

impl Format {
    /// libcryptsetup's type name.
    fn cryptsetup_type(self) -> &'static CStr {
        match self {
            Format::Luks1 => c"LUKS1",
            Format::Luks2 => c"LUKS2",
        }
    }

    /// Encryption sector of images librbd formats.
    pub fn sector_size(self) -> u32 {
        match self {
            Format::Luks1 => 512,
            Format::Luks2 => 4096,
        }
    }

    /// `luks1` / `luks2`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Luks1 => "luks1",
            Format::Luks2 => "luks2",
        }
    }
}

/// The cipher of a new header (librbd's `rbd_encryption_algorithm_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// AES-128 in XTS (a 32-byte volume key).
    Aes128,
    /// AES-256 in XTS (a 64-byte volume key), librbd's default.
    Aes256,
}

impl Alg {
    fn key_bytes(self) -> usize {
        match self {
            Alg::Aes128 => 32,
            Alg::Aes256 => 64,
        }
    }
}

/// What went wrong, with the errno librbd returns for it.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    /// libcryptsetup is not installed.
    #[error("LUKS encryption needs libcryptsetup.so.12 (Debian package libcryptsetup12): {0}")]
    NoLibrary(String),
    /// No LUKS header of the requested kind at the start of the image.
    #[error("no {0} header at the start of the image")]
    NotLuks(String),
    /// The passphrase opens no key slot.
    #[error("the passphrase opens no key slot of the LUKS header")]
    WrongPassphrase,
    /// A header this implementation cannot serve.
    #[error("unsupported LUKS header: {0}")]
    Unsupported(String),
    /// The image cannot hold the header and any data.
    #[error("image is too small: encryption needs more than {0} bytes")]
    TooSmall(u64),
    /// libcryptsetup failed otherwise.
    #[error("libcryptsetup {call} failed: {errno}")]
    Cryptsetup {
        /// The call that failed.
        call: &'static str,
        /// Its negative errno.
        errno: i32,
    },
    /// The memory file holding the header failed.
    #[error("header buffer: {0}")]
    Io(#[from] std::io::Error),
}

impl LuksError {
    /// The positive errno librbd reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            LuksError::NoLibrary(_) | LuksError::Unsupported(_) => libc::EOPNOTSUPP,
            LuksError::NotLuks(_) => libc::EINVAL,
            LuksError::WrongPassphrase => libc::EPERM,
            LuksError::TooSmall(_) => libc::ENOSPC,
            LuksError::Cryptsetup { errno, .. } => errno.unsigned_abs() as i32,
            LuksError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

type Result<T> = std::result::Result<T, LuksError>;

/// The libcryptsetup calls used, resolved once.
struct Api {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(*mut *mut c_void, *const c_char) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
    set_log: unsafe extern "C" fn(
        *mut c_void,
        Option<unsafe extern "C" fn(c_int, *const c_char, *mut c_void)>,
        *mut c_void,
    ),
    format: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        usize,
        *mut c_void,
    ) -> c_int,
    add_key: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *const c_char,
        usize,
        *const c_char,
        usize,
    ) -> c_int,
    load: unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void) -> c_int,
    key_get: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut c_char,
        *mut usize,
        *const c_char,
        usize,
    ) -> c_int,
    data_offset: unsafe extern "C" fn(*mut c_void) -> u64,
    sector_size: unsafe extern "C" fn(*mut c_void) -> c_int,
    cipher: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    cipher_mode: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    get_type: unsafe extern "C" fn(*mut c_void) -> *const c_char,
}

/// libcryptsetup's `struct crypt_params_luks1`.
#[repr(C)]
struct ParamsLuks1 {
    hash: *const c_char,
    data_alignment: usize,
    data_device: *const c_char,
}

/// libcryptsetup's `struct crypt_params_luks2`.
#[repr(C)]
struct ParamsLuks2 {
    pbkdf: *const c_void,
    integrity: *const c_char,
    integrity_params: *const c_void,
    data_alignment: usize,
    data_device: *const c_char,
    sector_size: u32,
    label: *const c_char,
    subsystem: *const c_char,
}

/// libcryptsetup's `CRYPT_ANY_SLOT`.
const ANY_SLOT: c_int = -1;

/// libcryptsetup's own messages are dropped: failures are reported through
/// return codes, and its messages could name key material sizes or paths.
unsafe extern "C" fn quiet_log(_level: c_int, _msg: *const c_char, _usr: *mut c_void) {}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: loading a system library whose initialisers are benign;
        // each symbol below is given its prototype from libcryptsetup.h.
        unsafe {
            let lib = libloading::Library::new("libcryptsetup.so.12").map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| e.to_string())?
                };
            }
            Ok(Api {
                init: sym!(b"crypt_init\0"),
                free: sym!(b"crypt_free\0"),
                set_log: sym!(b"crypt_set_log_callback\0"),
                format: sym!(b"crypt_format\0"),
                add_key: sym!(b"crypt_keyslot_add_by_volume_key\0"),
                load: sym!(b"crypt_load\0"),
                key_get: sym!(b"crypt_volume_key_get\0"),
                data_offset: sym!(b"crypt_get_data_offset\0"),
                sector_size: sym!(b"crypt_get_sector_size\0"),
                cipher: sym!(b"crypt_get_cipher\0"),
                cipher_mode: sym!(b"crypt_get_cipher_mode\0"),
                get_type: sym!(b"crypt_get_type\0"),
                _lib: lib,
            })
        }
    })
    .as_ref()
    .map_err(|e| LuksError::NoLibrary(e.clone()))
}

/// A libcryptsetup context on a memory file that stands for the device.
struct Device {
    api: &'static Api,
    cd: *mut c_void,
    file: File,
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: `cd` came from crypt_init and is freed once.
        unsafe { (self.api.free)(self.cd) };
    }
}

fn check(call: &'static str, r: c_int) -> Result<c_int> {
    if r < 0 {
        Err(LuksError::Cryptsetup { call, errno: r })
    } else {
        Ok(r)
    }
}

impl Device {
    /// A memory file holding `bytes`, `len` long, opened by libcryptsetup.
    fn new(bytes: &[u8], len: u64) -> Result<Device> {
        let api = api()?;
        // SAFETY: memfd_create with a valid name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"quarry-luks".as_ptr(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes)?;
        file.set_len(len.max(bytes.len() as u64))?;
        let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| LuksError::Unsupported(e.to_string()))?;
        let mut cd = std::ptr::null_mut();
        // SAFETY: out-pointer and NUL-terminated path are valid.
        check("crypt_init", unsafe { (api.init)(&mut cd, path.as_ptr()) })?;
        // SAFETY: `cd` is a live context; the callback ignores its input.
        unsafe { (api.set_log)(cd, Some(quiet_log), std::ptr::null_mut()) };
        Ok(Device { api, cd, file })
    }

    fn load(&self, want: Option<Format>) -> Result<Format> {
        let ty = want.map_or(std::ptr::null(), |f| f.cryptsetup_type().as_ptr());
        // SAFETY: live context; type is NULL or a static C string.
        let r = unsafe { (self.api.load)(self.cd, ty, std::ptr::null_mut()) };
        let what = want.map_or("LUKS".to_string(), |f| f.name().to_uppercase());
        if r < 0 {
            return Err(LuksError::NotLuks(what));
        }
        // SAFETY: live context; the result is a static string or NULL.
        let t = unsafe { cstr((self.api.get_type)(self.cd)) };
        match t.as_deref() {
            Some("LUKS1") => Ok(Format::Luks1),
            Some("LUKS2") => Ok(Format::Luks2),
            _ => Err(LuksError::NotLuks(what)),
        }
    }

    fn data_offset(&self) -> u64 {
        // SAFETY: live context.
        let sectors = unsafe { (self.api.data_offset)(self.cd) };
        sectors << 9
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn cstr(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
}

/// The data cipher of an unlocked image.
enum Cipher {
    A128(Box<Xts<Aes128>>),
    A256(Box<Xts<Aes256>>),
}

/// An unlocked image: where its data starts and how its sectors are
/// encrypted.
pub struct Crypto {
    format: Format,
    data_offset: u64,
    sector: u64,
    cipher: Cipher,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Crypto")
            .field("format", &self.format)
            .field("data_offset", &self.data_offset)
            .field("sector", &self.sector)
            .finish_non_exhaustive()
    }
}

impl Crypto {
    fn new(format: Format, data_offset: u64, sector: u64, key: &[u8]) -> Result<Crypto> {
        let half = key.len() / 2;
        let (k1, k2) = key.split_at(half);
        let cipher = match key.len() {
            32 => Cipher::A128(Box::new(Xts::new(
                Aes128::new_from_slice(k1).map_err(|e| LuksError::Unsupported(e.to_string()))?,
                Aes128::new_from_slice(k2).map_err(|e| LuksError::Unsupported(e.to_string()))?,
            ))),
            64 => Cipher::A256(Box::new(Xts::new(
                Aes256::new_from_slice(k1).map_err(|e| LuksError::Unsupported(e.to_string()))?,
                Aes256::new_from_slice(k2).map_err(|e| LuksError::Unsupported(e.to_string()))?,
            ))),
            n => return Err(LuksError::Unsupported(format!("a {n}-byte volume key"))),
        };
        if !(sector.is_power_of_two() && (512..=4096).contains(&sector)) {
            return Err(LuksError::Unsupported(format!("sector size {sector}")));
        }
        if data_offset == 0 || !data_offset.is_multiple_of(sector) {
            return Err(LuksError::Unsupported(format!("data offset {data_offset}")));
        }
        Ok(Crypto {
            format,
            data_offset,
            sector,
            cipher,
        })
    }

    /// LUKS1 or LUKS2.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes before the data area (the header and key slots).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The encryption sector in bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    fn each_sector(&self, buf: &mut [u8], off: u64, f: impl Fn(&mut [u8], u64)) {
        debug_assert!(
            off.is_multiple_of(self.sector) && (buf.len() as u64).is_multiple_of(self.sector),
            "crypt of an unaligned range"
        );
        for (i, s) in buf.chunks_mut(self.sector as usize).enumerate() {
            f(s, (off + i as u64 * self.sector) / IV_UNIT);
        }
    }

    /// Encrypt whole sectors in place; `off` is the offset in the data area.
    pub fn encrypt(&self, buf: &mut [u8], off: u64) {
        match &self.cipher {
            Cipher::A128(x) => self.each_sector(buf, off, |s, iv| x.crypt_sector(s, iv, true)),
            Cipher::A256(x) => self.each_sector(buf, off, |s, iv| x.crypt_sector(s, iv, true)),
        }
    }

    /// Decrypt whole sectors in place; `off` is the offset in the data
    /// area. A sector that is all zeros on disk (never written, discarded
    /// or zeroed through this layer) reads as zeros, as librbd reads holes.
    pub fn decrypt(&self, buf: &mut [u8], off: u64) {
        let dec = |s: &mut [u8], t| {
            if s.iter().any(|&b| b != 0) {
                match &self.cipher {
                    Cipher::A128(x) => x.crypt_sector(s, t, false),
                    Cipher::A256(x) => x.crypt_sector(s, t, false),
                }
            }
        };
        self.each_sector(buf, off, dec);
    }
}

/// Make a header for an image whose objects are `object_size` bytes
/// (the data area is aligned to it, as librbd does) and `image_size` raw
/// bytes: returns the header's bytes, to be written at offset 0, and the
/// unlocked crypto. `ENOSPC` if the image cannot hold the header.
pub fn format(
    format: Format,
    alg: Alg,
    passphrase: &[u8],
    object_size: u64,
    image_size: u64,
) -> Result<(Vec<u8>, Crypto)> {
    let dev = Device::new(&[], 4096)?;
    let mut key = Zeroizing::new(vec![0u8; alg.key_bytes()]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let align = (object_size / 512) as usize;
    let mut p1 = ParamsLuks1 {
        hash: c"sha256".as_ptr(),
        data_alignment: align,
        data_device: std::ptr::null(),
    };
    let mut p2 = ParamsLuks2 {
        pbkdf: std::ptr::null(),
        integrity: std::ptr::null(),
        integrity_params: std::ptr::null(),
        data_alignment: align,
        data_device: std::ptr::null(),
        sector_size: format.sector_size(),
        label: std::ptr::null(),
        subsystem: std::ptr::null(),
    };
    let params: *mut c_void = match format {
        Format::Luks1 => (&mut p1 as *mut ParamsLuks1).cast(),
        Format::Luks2 => (&mut p2 as *mut ParamsLuks2).cast(),
    };
    // SAFETY: live context, static strings, key buffer of key.len() bytes,
    // params of the struct libcryptsetup expects for this type.
    check("crypt_format", unsafe {
        (dev.api.format)(
            dev.cd,
            format.cryptsetup_type().as_ptr(),
            c"aes".as_ptr(),
            c"xts-plain64".as_ptr(),
            std::ptr::null(),
            key.as_ptr().cast(),
            key.len(),
            params,
        )
    })?;
    let offset = dev.data_offset();
    if offset >= image_size {
        return Err(LuksError::TooSmall(offset));
    }
    // SAFETY: live context; key and passphrase buffers with their lengths.
    check("crypt_keyslot_add_by_volume_key", unsafe {
        (dev.api.add_key)(
            dev.cd,
            ANY_SLOT,
            key.as_ptr().cast(),
            key.len(),
            passphrase.as_ptr().cast(),
            passphrase.len(),
        )
    })?;
    let mut header = Vec::new();
    let mut f = &dev.file;
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut header)?;
    header.truncate(offset as usize);
    let crypto = Crypto::new(format, offset, format.sector_size() as u64, &key)?;
    Ok((header, crypto))
}

/// libcryptsetup checks that the device can hold the header and its key
/// slots (LUKS2: up to 2 x 4 MiB of metadata and 128 MiB of key slots), so
/// the memory file is made this long (sparse).
const DEVICE_BYTES: u64 = 136 << 20;

/// How many bytes from the image's start hold the header, found from its
/// first [`PROBE_BYTES`]: `EINVAL` if there is no LUKS header (of the
/// wanted version).
pub fn header_len(first: &[u8], want: Option<Format>) -> Result<u64> {
    let dev = Device::new(first, DEVICE_BYTES)?;
    dev.load(want)?;
    Ok(dev.data_offset())
}

/// Unlock an image from its header (the image's first
/// [`header_len`] bytes) with a passphrase: `EPERM` if it opens no key
/// slot.
pub fn load(header: &[u8], want: Option<Format>, passphrase: &[u8]) -> Result<Crypto> {
    let dev = Device::new(header, DEVICE_BYTES)?;
    let format = dev.load(want)?;
    // SAFETY: live context; results are static strings or NULL.
    let (cipher, mode) = unsafe {
        (
            cstr((dev.api.cipher)(dev.cd)),
            cstr((dev.api.cipher_mode)(dev.cd)),
        )
    };
    if cipher.as_deref() != Some("aes") || mode.as_deref() != Some("xts-plain64") {
        return Err(LuksError::Unsupported(format!(
            "cipher {}-{} (only aes-xts-plain64)",
            cipher.unwrap_or_default(),
            mode.unwrap_or_default()
        )));
    }
    // SAFETY: live context.
    let sector = unsafe { (dev.api.sector_size)(dev.cd) };
    let mut key = Zeroizing::new(vec![0u8; 64]);
    let mut len = key.len();
    // SAFETY: live context; key buffer of `len` bytes; passphrase buffer.
    let r = unsafe {
        (dev.api.key_get)(
            dev.cd,
            ANY_SLOT,
            key.as_mut_ptr().cast(),
            &mut len,
            passphrase.as_ptr().cast(),
            passphrase.len(),
        )
    };
    if r == -libc::EPERM {
        return Err(LuksError::WrongPassphrase);
    }
    check("crypt_volume_key_get", r)?;
    Crypto::new(
        format,
        dev.data_offset(),
        u64::try_from(sector).unwrap_or(0),
        &key[..len.min(key.len())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IEEE 1619-2007 XTS-AES-128 vector 4 (data unit 0, 512 bytes of
    /// 0..=255 twice): the first and last 16 bytes of its ciphertext
    /// (the last checked against Python cryptography's AES-XTS).
    #[test]
    fn xts_matches_the_standard_vector() {
        let key1 = hex("2718281828459045235360287471352631415926535897932384626433832795");
        let c = Crypto::new(Format::Luks1, 4 << 20, 512, &key1).expect("crypto");
        let mut buf: Vec<u8> = (0..512).map(|i| (i % 256) as u8).collect();
        c.encrypt(&mut buf, 0);
        assert_eq!(buf[..16], hex("27a7479befa1d476489f308cd4cfa6e2")[..]);
        assert_eq!(buf[496..], hex("0a282df920147beabe421ee5319d0568")[..]);
        c.decrypt(&mut buf, 0);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8));
    }

    #[test]
    fn sectors_use_their_512_byte_number_and_holes_stay_zero() {
        let key = [7u8; 64];
        let c = Crypto::new(Format::Luks2, 16 << 20, 4096, &key).expect("crypto");
        let mut a = vec![0x5au8; 8192];
        c.encrypt(&mut a, 4096);
        // The second 4 KiB sector of the write is sector 8+8 = 16 in 512s:
        // encrypting it alone at its own offset gives the same bytes.
        let mut b = vec![0x5au8; 4096];
        c.encrypt(&mut b, 8192);
        assert_eq!(a[4096..], b[..]);
        let mut z = vec![0u8; 4096];
        c.decrypt(&mut z, 0);
        assert!(z.iter().all(|&x| x == 0));
    }

    #[test]
    fn bad_keys_and_geometry_are_refused() {
        assert!(Crypto::new(Format::Luks1, 4096, 512, &[0u8; 48]).is_err());
        assert!(Crypto::new(Format::Luks1, 4096, 1000, &[0u8; 32]).is_err());
        assert!(Crypto::new(Format::Luks1, 0, 512, &[0u8; 32]).is_err());
    }

    /// Format through libcryptsetup, find the header's length from its
    /// start, unlock it: the same key (same ciphertext); a wrong
    /// passphrase, the other version, no header and a too small image are
    /// refused with librbd's errnos.
    fn format_then_load(f: Format, alg: Alg) {
        let (header, made) = format(f, alg, b"pw", 4 << 20, 64 << 20).expect("format");
        assert_eq!(header.len() as u64, made.data_offset());
        assert_eq!(
            made.data_offset() % (4 << 20),
            0,
            "aligned to the object size"
        );
        let first = &header[..PROBE_BYTES as usize];
        assert_eq!(
            header_len(first, Some(f)).expect("probe"),
            made.data_offset()
        );
        assert_eq!(header_len(first, None).expect("probe"), made.data_offset());
        let other = match f {
            Format::Luks1 => Format::Luks2,
            Format::Luks2 => Format::Luks1,
        };
        let e = header_len(first, Some(other)).expect_err("other version");
        assert_eq!(e.errno(), libc::EINVAL, "{e}");
        let loaded = load(&header, None, b"pw").expect("load");
        assert_eq!(loaded.format(), f);
        assert_eq!(loaded.sector_size(), f.sector_size() as u64);
        let (mut a, mut b) = (vec![1u8; 8192], vec![1u8; 8192]);
        made.encrypt(&mut a, 4096);
        loaded.encrypt(&mut b, 4096);
        assert_eq!(a, b, "the loaded key is the formatted one");
        assert_ne!(a, vec![1u8; 8192]);
        let e = load(&header, Some(f), b"px").expect_err("wrong passphrase");
        assert_eq!(e.errno(), libc::EPERM, "{e}");
        let e = header_len(&[0u8; 4096], None).expect_err("no header");
        assert_eq!(e.errno(), libc::EINVAL, "{e}");
        let e = format(f, alg, b"pw", 4 << 20, 4 << 20).expect_err("too small");
        assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    }

    #[test]
    fn luks1_formats_and_loads_through_libcryptsetup() {
        format_then_load(Format::Luks1, Alg::Aes256);
    }

    #[test]
    fn luks2_formats_and_loads_through_libcryptsetup() {
        format_then_load(Format::Luks2, Alg::Aes128);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
