//! Encryption: the repository master key, the key slots that wrap it, and the
//! STREAM construction that seals every stored object (archive, index,
//! manifest) in authenticated segments.
//!
//! A sealed object is `header || segment*`. Each segment is at most
//! `segment_size` bytes of plaintext encrypted with AES-256-GCM under a key
//! derived for this object alone (HKDF-SHA256 over the master key and a random
//! salt from the header). The nonce is an 11-byte big-endian segment counter
//! followed by a last-segment flag, and every segment authenticates the header
//! plus a caller-given context (repository id, snapshot id, source name), so
//! truncation, reordering, and moving an object to another snapshot or source
//! all fail authentication. `docs/FORMAT.md` has the byte layout.

use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the master key, a key file's key, and every derived key.
pub const KEY_LEN: usize = 32;
/// First bytes of every sealed object.
pub const MAGIC: &[u8; 6] = b"COFFER";
/// Version of the sealed-object format written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// magic (6) + version (1) + kind (1) + salt (32) + segment size (4).
pub const HEADER_LEN: usize = 44;
/// Plaintext bytes per segment: large enough that the per-segment cost
/// (tag, nonce, AAD hashing) vanishes, small enough to hold a few in memory.
pub const DEFAULT_SEGMENT: usize = 1 << 20;
/// Largest segment size a reader accepts, so a damaged header cannot make us
/// allocate gigabytes.
pub const MAX_SEGMENT: usize = 16 << 20;
pub const TAG_LEN: usize = 16;
const SALT_LEN: usize = 32;
const OBJECT_KEY_INFO: &[u8] = b"coffer/v1/object-key";
const SLOT_AAD: &[u8] = b"coffer/v1/key-slot";
const KEY_FILE_PREFIX: &str = "coffer-key-v1:";

#[derive(Clone, Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("not a coffer object (its first bytes are not the coffer magic)")]
    BadMagic,
    #[error(
        "written in format version {0}, but this coffer reads version {FORMAT_VERSION}; use a newer coffer"
    )]
    UnsupportedVersion(u8),
    #[error("holds {found} where {expected} was expected")]
    WrongKind {
        found: &'static str,
        expected: &'static str,
    },
    #[error("its header is cut short ({0} of {HEADER_LEN} bytes)")]
    ShortHeader(usize),
    #[error("its header names an impossible segment size {0}")]
    BadSegmentSize(u32),
    #[error(
        "authentication failed at segment {0}: the bytes were changed, reordered, or belong to another object"
    )]
    Authentication(u64),
    #[error("it is truncated: the data ends before its final segment")]
    Truncated,
    #[error("it has bytes after its final segment")]
    TrailingData,
    #[error("the key file {path} is not a coffer key ({reason})")]
    KeyFileFormat { path: String, reason: String },
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
}

impl CryptoError {
    /// Wraps this error so it can travel through `io::Read`/`io::Write` and be
    /// recognised again by [`integrity_error`].
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// If an I/O error carries a [`CryptoError`] (a failed authentication inside a
/// reader), returns it: callers turn those into integrity failures (exit 3)
/// rather than operational ones.
pub fn integrity_error(e: &io::Error) -> Option<&CryptoError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<CryptoError>())
}

/// What a sealed object holds. Stored in the header and checked on open, so
/// an index cannot be passed off as an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Archive,
    Index,
    Manifest,
    /// Format 2: which pack holds which chunk (FORMAT.md section 19).
    ChunkIndex,
    /// Format 2: a session, mark or watch of the garbage collection
    /// (FORMAT.md section 23).
    GcRecord,
}

impl ObjectKind {
    fn byte(self) -> u8 {
        match self {
            ObjectKind::Archive => b'A',
            ObjectKind::Index => b'I',
            ObjectKind::Manifest => b'M',
            ObjectKind::ChunkIndex => b'X',
            ObjectKind::GcRecord => b'G',
        }
    }
    fn name(self) -> &'static str {
        match self {
            ObjectKind::Archive => "an archive",
            ObjectKind::Index => "an index",
            ObjectKind::Manifest => "a manifest",
            ObjectKind::ChunkIndex => "a chunk index",
            ObjectKind::GcRecord => "a garbage collection record",
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'A' => Some(ObjectKind::Archive),
            b'I' => Some(ObjectKind::Index),
            b'M' => Some(ObjectKind::Manifest),
            b'X' => Some(ObjectKind::ChunkIndex),
            b'G' => Some(ObjectKind::GcRecord),
            _ => None,
        }
    }
}

/// The repository's random master key. Never stored in the clear, wiped
/// from memory when dropped, and deliberately not `Clone`: it is shared by
/// reference (`Arc<MasterKey>` across threads), so exactly one copy lives.
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(random_array())
    }

    fn derive_object_key(&self, salt: &[u8]) -> Aes256Gcm {
        let hk = Hkdf::<Sha256>::new(Some(salt), &self.0);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(OBJECT_KEY_INFO, okm.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        // aes-gcm's `zeroize` feature wipes the cipher's key schedule on drop.
        Aes256Gcm::new_from_slice(okm.as_slice()).expect("32-byte key")
    }
}

impl MasterKey {
    /// A format-2 key derived from the master key (docs/FORMAT.md section
    /// 17.1): `HKDF-SHA256(salt = repository id, IKM = master key,
    /// info = "coffer/v2/" || name)`.
    pub fn subkey(&self, repo_id: &str, name: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(repo_id.as_bytes()), &self.0);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand_multi_info(&[b"coffer/v2/", name.as_bytes()], okm.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }

    /// The master key of a test vector.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(bytes)
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for MasterKey {}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

pub fn random_array<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

/// A random lowercase hex id of `bytes` random bytes.
pub fn random_id(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

fn nonce(counter: u64, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    // 11-byte big-endian counter; a u64 fills its low 8 bytes.
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

/// Encrypts everything written to it into `inner` as one sealed object.
/// Call [`SealWriter::finish`]: without it the object has no final segment
/// and every reader rejects it as truncated.
pub struct SealWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    buf: Vec<u8>,
    segment: usize,
    counter: u64,
}

impl<W: Write> SealWriter<W> {
    pub fn new(inner: W, key: &MasterKey, kind: ObjectKind, context: &[u8]) -> io::Result<Self> {
        Self::new_with_segment(inner, key, kind, context, DEFAULT_SEGMENT)
    }

    /// Like [`SealWriter::new`] with a chosen segment size (tests use tiny
    /// segments to exercise reordering and truncation across many segments).
    pub fn new_with_segment(
        mut inner: W,
        key: &MasterKey,
        kind: ObjectKind,
        context: &[u8],
        segment: usize,
    ) -> io::Result<Self> {
        if segment == 0 || segment > MAX_SEGMENT {
            return Err(io::Error::other("segment size out of range"));
        }
        let salt: [u8; SALT_LEN] = random_array();
        let header = header_bytes(kind, &salt, segment as u32);
        inner.write_all(&header)?;
        let mut aad = header.to_vec();
        aad.extend_from_slice(context);
        Ok(SealWriter {
            inner,
            cipher: key.derive_object_key(&salt),
            aad,
            buf: Vec::with_capacity(segment + TAG_LEN),
            segment,
            counter: 0,
        })
    }

    fn seal_segment(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(self.counter, last),
                &self.aad,
                self.buf.as_mut_slice().into(),
            )
            .map_err(|_| io::Error::other("AES-GCM refused to encrypt a segment"))?;
        self.buf.extend_from_slice(tag.as_slice());
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }

    /// Seals the final segment and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_segment(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed only once more data arrives: until then it
        // may still turn out to be the final segment.
        if self.buf.len() == self.segment {
            self.seal_segment(false)?;
        }
        let n = data.len().min(self.segment - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn header_bytes(kind: ObjectKind, salt: &[u8; SALT_LEN], segment: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = FORMAT_VERSION;
    h[7] = kind.byte();
    h[8..40].copy_from_slice(salt);
    h[40..44].copy_from_slice(&segment.to_be_bytes());
    h
}

/// Reads a sealed object and yields its plaintext, one authenticated segment
/// at a time: no byte reaches the caller before its segment's tag checked,
/// and the end of the plaintext is reported only after the final segment
/// authenticated as final.
pub struct OpenReader<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    segment: usize,
    counter: u64,
    /// Ciphertext of the segment being assembled, then its plaintext.
    buf: Vec<u8>,
    pos: usize,
    /// One byte read ahead to tell a full final segment from a full middle one.
    peeked: Option<u8>,
    done: bool,
    /// The first error, returned again by every later read: after a failure
    /// the buffer holds unauthenticated bytes, which must never come out.
    failed: Option<Latched>,
}

/// A copy of a reader's first error.
enum Latched {
    Crypto(CryptoError),
    Other(io::ErrorKind, String),
}

impl Latched {
    fn of(e: &io::Error) -> Latched {
        match integrity_error(e) {
            Some(c) => Latched::Crypto(c.clone()),
            None => Latched::Other(e.kind(), e.to_string()),
        }
    }

    fn to_io(&self) -> io::Error {
        match self {
            Latched::Crypto(c) => c.clone().into_io(),
            Latched::Other(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

impl<R: Read> OpenReader<R> {
    pub fn new(
        mut inner: R,
        key: &MasterKey,
        kind: ObjectKind,
        context: &[u8],
    ) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut header)?;
        if got < 6 || &header[..6] != MAGIC {
            if got < HEADER_LEN && header[..got] == MAGIC[..got.min(6)] {
                return Err(CryptoError::ShortHeader(got).into_io());
            }
            return Err(CryptoError::BadMagic.into_io());
        }
        if got < HEADER_LEN {
            return Err(CryptoError::ShortHeader(got).into_io());
        }
        if header[6] != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(header[6]).into_io());
        }
        match ObjectKind::from_byte(header[7]) {
            Some(k) if k == kind => {}
            Some(k) => {
                return Err(CryptoError::WrongKind {
                    found: k.name(),
                    expected: kind.name(),
                }
                .into_io());
            }
            None => return Err(CryptoError::BadMagic.into_io()),
        }
        let seg = u32::from_be_bytes(header[40..44].try_into().expect("4 bytes"));
        if seg == 0 || seg as usize > MAX_SEGMENT {
            return Err(CryptoError::BadSegmentSize(seg).into_io());
        }
        let mut aad = header.to_vec();
        aad.extend_from_slice(context);
        Ok(OpenReader {
            inner,
            cipher: key.derive_object_key(&header[8..40]),
            aad,
            segment: seg as usize,
            counter: 0,
            buf: Vec::with_capacity(seg as usize + TAG_LEN),
            pos: 0,
            peeked: None,
            done: false,
            failed: None,
        })
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn next_segment(&mut self) -> io::Result<()> {
        let want = self.segment + TAG_LEN;
        self.buf.clear();
        self.buf.resize(want, 0);
        let mut filled = 0;
        if let Some(b) = self.peeked.take() {
            self.buf[0] = b;
            filled = 1;
        }
        filled += read_full(&mut self.inner, &mut self.buf[filled..])?;
        self.buf.truncate(filled);
        let last = if filled == want {
            let mut one = [0u8; 1];
            if read_full(&mut self.inner, &mut one)? == 1 {
                self.peeked = Some(one[0]);
                false
            } else {
                true
            }
        } else {
            true
        };
        if self.buf.len() < TAG_LEN {
            return Err(CryptoError::Truncated.into_io());
        }
        let split = self.buf.len() - TAG_LEN;
        let tag = Tag::try_from(&self.buf[split..]).expect("16-byte tag");
        let (msg, _) = self.buf.split_at_mut(split);
        let ok = self
            .cipher
            .decrypt_inout_detached(&nonce(self.counter, last), &self.aad, msg.into(), &tag)
            .is_ok();
        if !ok {
            // A cut at a segment boundary leaves a segment that authenticates
            // as a middle one: say "truncated", which is what happened.
            if last && filled == want {
                let mut probe = self.buf.clone();
                let (m, t) = probe.split_at_mut(split);
                let t = Tag::try_from(&*t).expect("16-byte tag");
                if self
                    .cipher
                    .decrypt_inout_detached(&nonce(self.counter, false), &self.aad, m.into(), &t)
                    .is_ok()
                {
                    return Err(CryptoError::Truncated.into_io());
                }
            }
            return Err(CryptoError::Authentication(self.counter).into_io());
        }
        self.buf.truncate(split);
        self.pos = 0;
        self.counter += 1;
        if last {
            self.done = true;
        }
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(l) = &self.failed {
            return Err(l.to_io());
        }
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            if let Err(e) = self.next_segment() {
                self.failed = Some(Latched::of(&e));
                return Err(e);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Seals a small in-memory object (manifests).
pub fn seal_bytes(key: &MasterKey, kind: ObjectKind, context: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut w = SealWriter::new(Vec::new(), key, kind, context).expect("writing to a Vec");
    w.write_all(plain).expect("writing to a Vec");
    w.finish().expect("writing to a Vec")
}

/// Opens a small in-memory sealed object.
pub fn open_bytes(
    key: &MasterKey,
    kind: ObjectKind,
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    let res = OpenReader::new(sealed, key, kind, context).and_then(|mut r| r.read_to_end(&mut out));
    match res {
        Ok(_) => Ok(out),
        Err(e) => Err(match e.into_inner().map(|b| b.downcast::<CryptoError>()) {
            Some(Ok(c)) => *c,
            _ => CryptoError::Truncated,
        }),
    }
}

// ---------------------------------------------------------------- key slots

/// What the user holds to open a repository; both kinds are wiped from
/// memory when dropped.
pub enum Credential {
    KeyFile {
        path: String,
        key: Zeroizing<[u8; KEY_LEN]>,
    },
    Passphrase(Zeroizing<String>),
}

impl Credential {
    pub fn describe(&self) -> String {
        match self {
            Credential::KeyFile { path, .. } => format!("key file {path}"),
            Credential::Passphrase(_) => "passphrase".to_string(),
        }
    }
    fn kind(&self) -> SlotKind {
        match self {
            Credential::KeyFile { .. } => SlotKind::KeyFile,
            Credential::Passphrase(_) => SlotKind::Passphrase,
        }
    }
}

/// Writes a new random key file (mode 0600), refusing to overwrite.
pub fn generate_key_file(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = Zeroizing::new(random_array::<KEY_LEN>());
    let line = Zeroizing::new(format!("{KEY_FILE_PREFIX}{}\n", B64.encode(key.as_slice())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// Reads a key file written by [`generate_key_file`].
pub fn read_key_file(path: &std::path::Path) -> Result<Zeroizing<[u8; KEY_LEN]>, io::Error> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let bad = |reason: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            CryptoError::KeyFileFormat {
                path: path.display().to_string(),
                reason: reason.to_string(),
            },
        )
    };
    let body = text
        .trim()
        .strip_prefix(KEY_FILE_PREFIX)
        .ok_or_else(|| bad("it does not start with 'coffer-key-v1:'"))?;
    let raw = Zeroizing::new(
        B64.decode(body.trim())
            .map_err(|_| bad("its key is not valid base64"))?,
    );
    let key: [u8; KEY_LEN] = raw
        .as_slice()
        .try_into()
        .map_err(|_| bad("its key is not 32 bytes long"))?;
    Ok(Zeroizing::new(key))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    KeyFile,
    Passphrase,
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotKind::KeyFile => "key file",
            SlotKind::Passphrase => "passphrase",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Kdf {
    /// Key files hold 256 random bits: a cheap extract-and-expand suffices.
    HkdfSha256 { salt: String },
    /// Passphrases are guessable: Argon2id makes each guess expensive.
    Argon2id {
        salt: String,
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

/// A key slot: the master key wrapped under one key file or passphrase.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub version: u32,
    pub id: String,
    pub kind: SlotKind,
    /// RFC 3339, UTC; kept as written because it is authenticated as text.
    pub created: String,
    #[serde(default)]
    pub host: String,
    pub kdf: Kdf,
    pub nonce: String,
    pub wrapped_key: String,
}

/// Argon2id cost for new passphrase slots (RFC 9106's second recommendation
/// scaled to 64 MiB: about a quarter second here).
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;

fn slot_kek(cred: &Credential, kdf: &Kdf) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, CryptoError> {
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    match (cred, kdf) {
        (Credential::KeyFile { key, .. }, Kdf::HkdfSha256 { salt }) => {
            let salt = B64.decode(salt).unwrap_or_default();
            Hkdf::<Sha256>::new(Some(&salt), key.as_slice())
                .expand(b"coffer/v1/key-file-kek", kek.as_mut_slice())
                .expect("32 bytes");
        }
        (
            Credential::Passphrase(p),
            Kdf::Argon2id {
                salt,
                m_cost_kib,
                t_cost,
                p_cost,
            },
        ) => {
            let salt = B64.decode(salt).unwrap_or_default();
            // Refuse absurd stored parameters rather than allocate them.
            if *m_cost_kib > 4 * 1024 * 1024 || *t_cost > 100 || *p_cost > 64 {
                return Err(CryptoError::Kdf(
                    "the key slot asks for unreasonable Argon2 costs".into(),
                ));
            }
            let params = argon2::Params::new(*m_cost_kib, *t_cost, *p_cost, Some(KEY_LEN))
                .map_err(|e| CryptoError::Kdf(e.to_string()))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p.as_bytes(), &salt, kek.as_mut_slice())
                .map_err(|e| CryptoError::Kdf(e.to_string()))?;
        }
        _ => return Ok(None),
    }
    Ok(Some(kek))
}

/// Version of key slots written by this build.
pub const SLOT_VERSION: u32 = 1;

/// Everything a slot says about itself, and the repository's `config`
/// object (by SHA-256), is authenticated by the wrap: changing any of it
/// makes the slot refuse to open.
fn slot_aad(slot: &KeySlot, repo_id: &str, config_sha256: &[u8; 32]) -> Vec<u8> {
    let mut aad = SLOT_AAD.to_vec();
    for part in [
        repo_id.as_bytes(),
        slot.version.to_string().as_bytes(),
        slot.id.as_bytes(),
        match slot.kind {
            SlotKind::KeyFile => b"key_file".as_slice(),
            SlotKind::Passphrase => b"passphrase".as_slice(),
        },
        slot.created.as_bytes(),
        slot.host.as_bytes(),
        config_sha256.as_slice(),
    ] {
        aad.push(0);
        aad.extend_from_slice(part);
    }
    aad
}

impl KeySlot {
    /// Wraps `master` under `cred` in a new slot of the repository whose
    /// `config` object hashes to `config_sha256`.
    pub fn wrap(
        master: &MasterKey,
        cred: &Credential,
        repo_id: &str,
        config_sha256: &[u8; 32],
        host: &str,
    ) -> Result<Self, CryptoError> {
        let salt = B64.encode(random_array::<SALT_LEN>());
        let kdf = match cred {
            Credential::KeyFile { .. } => Kdf::HkdfSha256 { salt },
            Credential::Passphrase(_) => Kdf::Argon2id {
                salt,
                m_cost_kib: ARGON2_M_KIB,
                t_cost: ARGON2_T,
                p_cost: ARGON2_P,
            },
        };
        let kek = slot_kek(cred, &kdf)?.expect("kdf chosen for this credential");
        let nonce_bytes: [u8; 12] = random_array();
        let mut slot = KeySlot {
            version: SLOT_VERSION,
            id: random_id(8),
            kind: cred.kind(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: host.to_string(),
            kdf,
            nonce: B64.encode(nonce_bytes),
            wrapped_key: String::new(),
        };
        // Holds the master key until it is encrypted in place.
        let mut buf = Zeroizing::new(master.0.to_vec());
        let cipher = Aes256Gcm::new_from_slice(kek.as_slice()).expect("32-byte key");
        let tag = cipher
            .encrypt_inout_detached(
                &Nonce::from(nonce_bytes),
                &slot_aad(&slot, repo_id, config_sha256),
                buf.as_mut_slice().into(),
            )
            .expect("wrapping 32 bytes");
        buf.extend_from_slice(tag.as_slice());
        slot.wrapped_key = B64.encode(buf.as_slice());
        Ok(slot)
    }

    /// The master key if `cred` opens this slot; `None` if it does not.
    pub fn unwrap(
        &self,
        cred: &Credential,
        repo_id: &str,
        config_sha256: &[u8; 32],
    ) -> Result<Option<MasterKey>, CryptoError> {
        if cred.kind() != self.kind || self.version != SLOT_VERSION {
            return Ok(None);
        }
        let Some(kek) = slot_kek(cred, &self.kdf)? else {
            return Ok(None);
        };
        let (Ok(nonce_bytes), Ok(buf)) = (B64.decode(&self.nonce), B64.decode(&self.wrapped_key))
        else {
            return Ok(None);
        };
        // Decrypted in place: it then holds the master key.
        let mut buf = Zeroizing::new(buf);
        let Ok(nonce_bytes) = <[u8; 12]>::try_from(nonce_bytes.as_slice()) else {
            return Ok(None);
        };
        if buf.len() != KEY_LEN + TAG_LEN {
            return Ok(None);
        }
        let tag = Tag::try_from(&buf[KEY_LEN..]).expect("16 bytes");
        let cipher = Aes256Gcm::new_from_slice(kek.as_slice()).expect("32-byte key");
        let ok = cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce_bytes),
                &slot_aad(self, repo_id, config_sha256),
                (&mut buf[..KEY_LEN]).into(),
                &tag,
            )
            .is_ok();
        if !ok {
            return Ok(None);
        }
        Ok(Some(MasterKey(
            buf[..KEY_LEN].try_into().expect("32 bytes"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(plain: &[u8], seg: usize, ctx: &[u8], key: &MasterKey) -> Vec<u8> {
        let mut w =
            SealWriter::new_with_segment(Vec::new(), key, ObjectKind::Archive, ctx, seg).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    }

    /// Issue 10 item 14, checked by the compiler: the master key is wiped
    /// on drop, and cannot be cloned (so no stray copies are made).
    #[test]
    fn master_key_is_wiped_on_drop_and_cannot_be_cloned() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<MasterKey>();
        wiped_on_drop::<Aes256Gcm>();
        // `assert_not_impl_any!` (static_assertions): the call below is
        // ambiguous, and fails to compile, if `MasterKey: Clone`.
        trait AmbiguousIfClone<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfClone<()> for T {}
        #[allow(dead_code)]
        struct IfClone;
        impl<T: Clone> AmbiguousIfClone<IfClone> for T {}
        <MasterKey as AmbiguousIfClone<_>>::check();
        let mut k = MasterKey::generate();
        k.0 = [9; KEY_LEN];
        // What Drop runs:
        k.0.zeroize();
        assert_eq!(k.0, [0; KEY_LEN]);
    }

    /// Issue 10: a read after a failed one returns the same error, never
    /// the unauthenticated bytes left in the buffer, nor a clean end.
    #[test]
    fn a_failed_read_fails_again_on_every_retry() {
        let key = MasterKey::generate();
        let plain = vec![7u8; 3 * 64];
        let mut sealed = seal(&plain, 64, b"ctx", &key);
        sealed[HEADER_LEN + 5] ^= 1;
        let mut r = OpenReader::new(sealed.as_slice(), &key, ObjectKind::Archive, b"ctx").unwrap();
        let mut buf = [0u8; 16];
        for attempt in 0..3 {
            let e = r
                .read(&mut buf)
                .expect_err("a damaged segment must not read");
            assert!(
                matches!(integrity_error(&e), Some(CryptoError::Authentication(0))),
                "attempt {attempt}: {e}"
            );
        }
    }

    fn open(sealed: &[u8], ctx: &[u8], key: &MasterKey) -> io::Result<Vec<u8>> {
        let mut r = OpenReader::new(sealed, key, ObjectKind::Archive, ctx)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    fn err_of(e: io::Error) -> String {
        integrity_error(&e)
            .map(|c| c.to_string())
            .unwrap_or_else(|| e.to_string())
    }

    #[test]
    fn round_trip_at_every_boundary() {
        let key = MasterKey::generate();
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = seal(&plain, 16, b"ctx", &key);
            assert_eq!(open(&sealed, b"ctx", &key).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn truncation_at_segment_boundary_is_detected() {
        let key = MasterKey::generate();
        let plain = vec![7u8; 64];
        let sealed = seal(&plain, 16, b"ctx", &key);
        // Drop the final segment entirely: what remains ends on a boundary.
        for cut in [
            HEADER_LEN + 32,
            HEADER_LEN + 64,
            sealed.len() - 1,
            HEADER_LEN + 3,
        ] {
            let e = open(&sealed[..cut], b"ctx", &key).unwrap_err();
            assert!(integrity_error(&e).is_some(), "cut {cut}: {e}");
        }
        let e = open(&sealed[..HEADER_LEN + 64], b"ctx", &key).unwrap_err();
        assert!(err_of(e).contains("truncated"));
    }

    #[test]
    fn reordering_swapping_and_flipping_are_detected() {
        let key = MasterKey::generate();
        let plain: Vec<u8> = (0..64u8).collect();
        let sealed = seal(&plain, 16, b"ctx", &key);
        let seg = 16 + TAG_LEN;
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + seg);
        let first = sealed[a..a + seg].to_vec();
        swapped[a..a + seg].copy_from_slice(&sealed[b..b + seg]);
        swapped[b..b + seg].copy_from_slice(&first);
        assert!(open(&swapped, b"ctx", &key).is_err());
        // Another context (snapshot / source) must not open it.
        assert!(open(&sealed, b"other", &key).is_err());
        // Another key must not open it.
        assert!(open(&sealed, b"ctx", &MasterKey::generate()).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad, b"ctx", &key).is_err(), "flip at {i} passed");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&longer, b"ctx", &key).is_err());
    }

    #[test]
    fn forgotten_finish_is_truncation() {
        let key = MasterKey::generate();
        let mut w =
            SealWriter::new_with_segment(Vec::new(), &key, ObjectKind::Archive, b"c", 16).unwrap();
        w.write_all(&[1u8; 40]).unwrap();
        // Simulate a crash: take what was written without finish().
        let partial = w.inner.clone();
        assert!(open(&partial, b"c", &key).is_err());
    }

    #[test]
    fn key_slots_open_only_with_their_credential() {
        let master = MasterKey::generate();
        let cred = Credential::KeyFile {
            path: "k".into(),
            key: Zeroizing::new(random_array()),
        };
        let cfg = [7u8; 32];
        let slot = KeySlot::wrap(&master, &cred, "repo", &cfg, "host").unwrap();
        let got = slot.unwrap(&cred, "repo", &cfg).unwrap().unwrap();
        assert_eq!(got.0, master.0);
        let other = Credential::KeyFile {
            path: "k2".into(),
            key: Zeroizing::new(random_array()),
        };
        assert!(slot.unwrap(&other, "repo", &cfg).unwrap().is_none());
        assert!(slot.unwrap(&cred, "another-repo", &cfg).unwrap().is_none());
        assert!(slot.unwrap(&cred, "repo", &[8u8; 32]).unwrap().is_none());
        assert!(
            slot.unwrap(
                &Credential::Passphrase(String::from("x").into()),
                "repo",
                &cfg
            )
            .unwrap()
            .is_none()
        );
        // Every field of the slot is authenticated.
        for tamper in [
            |s: &mut KeySlot| s.host.push('x'),
            |s: &mut KeySlot| s.created.replace_range(0..4, "1999"),
            |s: &mut KeySlot| s.id.replace_range(0..1, "z"),
        ] {
            let mut t = slot.clone();
            tamper(&mut t);
            assert!(t.unwrap(&cred, "repo", &cfg).unwrap().is_none());
        }
    }
}
