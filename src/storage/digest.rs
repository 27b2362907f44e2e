//! The digests of files (RFC 9530's `Repr-Digest`), computed as bytes arrive and kept with each
//! committed version, so a download can name them without reading the file and an append can
//! extend them without rereading it.
//!
//! - Every body is hashed as it streams in ([`Hasher`]): `crc32c` always (the hardware
//!   instruction, a few percent of an upload's cost), `sha-256` and `sha-512` only when the
//!   request uses them.
//! - What is kept of a file ([`Kept`]) is its `crc32c` and, when a write asked for it, the
//!   *resumable* state of its `sha-256` ([`Sha256State`]: the eight chaining words and the
//!   unhashed tail of under 64 bytes): an append combines the crc32c of its bytes with the
//!   file's ([`crc32c::crc32c_combine`]) and feeds its bytes on into the saved sha-256 state.
//!   `sha-512` is verified on bodies (and on uploads, whose file is the body) but not kept.
//! - It is kept in the extended attribute [`XATTR_NAME`] of the file itself, written by the
//!   same commit, under the same lock, as the data ([`store`]): on the temp file before it is
//!   renamed or linked in (a rename keeps it), or on the file after an append's bytes are in.
//!   It names the version it describes ([`Identity`]: size, modification time, inode, birth
//!   time), and [`load`] gives it only while the file still is that version: a file another
//!   writer changed, or an append a crash cut off (rolled back by truncation), has no kept
//!   digest, never a wrong one.
//! - A filesystem without `user.*` attributes (NFS before 4.2, some FUSE volumes) keeps the same
//!   bytes in a record beside the file instead ([`RECORD_PREFIX`]`<inode>`, in the reserved
//!   namespace, so listings hide it and clients cannot name it), replaced by rename under the
//!   file's lock by the commit; a file move carries it ([`carry`]), a replace or a move over a
//!   file removes the old file's ([`forget`]), a delete the deleted file's ([`forget_deleted`]),
//!   and the start-up sweep those whose inode is not in their directory (a file another writer
//!   removed). Its identity check is the same. The file's change time is not part of it: a
//!   rename or link of the file (every upload's commit, every move) changes it after the record
//!   is written, so it would need rewriting at each; and in the attribute form the attribute's
//!   own write changes it.
//! - On a volume whose modification times are whole seconds, a same-size change by another
//!   writer within the second of a commit could not be told from it: a probe at start
//!   ([`probe_timestamps`]) turns kept digests off there ([`off`]).
//! - Same-size changes by another writer within one tick of the file system's clock (a few
//!   milliseconds) of a commit cannot be told from that commit, nor can
//!   one landing during an append's own write: an append stats the file right before its write
//!   and right after it, and keeps the extended digest only if the file did not change before
//!   the write and still is, at the store, what it was right after it
//!   ([`store_if_unchanged`]); the window left is from the stat before the write to the end
//!   of the write.
//!
//! This module knows no HTTP: it computes, compares and keeps bytes of digests. Parsing and
//! printing the fields is the application's (`app/digest_fields.rs`).

use super::dir::{Access, Dir};
use super::temp::TempFile;
use crate::sys;
use sha2::Digest as _;
use std::ffi::{CStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

/// The extended attribute that holds a file's kept digests.
pub const XATTR_NAME: &CStr = c"user.http-nas.digest";

/// Prefix of the records that keep digests where the filesystem has no extended attributes,
/// followed by the file's inode number (inside the reserved namespace).
pub const RECORD_PREFIX: &str = ".http-nas-digest-";

/// Set once the volume refused an extended attribute (`ENOTSUP`): digests are kept in records
/// from then on, and moves and replaces look after them. Never set on a volume that has them,
/// which then pays nothing for records.
static RECORDS_IN_USE: AtomicBool = AtomicBool::new(false);

/// Set at start when the volume's modification times are whole seconds (ext4 with 128-byte
/// inodes, some FUSE and network volumes): such a volume cannot tell another writer's
/// same-size change within the second of a commit from the commit, so no digest is kept or
/// read on it ([`probe_timestamps`]).
static COARSE_TIMES: AtomicBool = AtomicBool::new(false);

/// Set at start when a sync moves a written file's modification time (a FUSE filesystem that
/// writes back on `fsync`, like JuiceFS): an append's version is then taken after its sync, not
/// right after its write ([`identity_after_sync`]).
static SYNC_MOVES_MTIME: AtomicBool = AtomicBool::new(false);

/// Writes the start-up probe makes to its file, each a while after the last: on a volume with
/// finer timestamps, at least one lands off a whole second.
const PROBE_WRITES: usize = 3;

/// Time between the probe's writes (a few ticks of the kernel's coarse clock, which stamps
/// modification times).
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(7);

/// Version of the attribute's layout; another is ignored (as if there were none).
const FORMAT_VERSION: u8 = 1;

/// Most bytes the attribute takes: the identity, the crc32c, and a sha-256 state with a full
/// tail (well under the ~900 bytes ext4 with 128-byte inodes and 1 KiB blocks allows).
const MAX_RECORD_BYTES: usize = 1 + IDENTITY_BYTES + 4 + 1 + 32 + SHA256_BLOCK_BYTES;

/// Bytes of the encoded [`Identity`].
const IDENTITY_BYTES: usize = 8 + 8 + 4 + 8 + 8 + 4;

/// SHA-256 works on 64-byte blocks.
const SHA256_BLOCK_BYTES: usize = 64;

/// SHA-256's initial chaining value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A digest algorithm the service has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Crc32c,
}

impl Algorithm {
    /// All of them, strongest first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Crc32c];

    /// The name RFC 9530's registry gives it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha-256",
            Algorithm::Sha512 => "sha-512",
            Algorithm::Crc32c => "crc32c",
        }
    }

    /// The algorithm of a registry name (lowercase, as RFC 8941 keys are).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Bytes of its digest.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Crc32c => 4,
        }
    }
}

/// The resumable state of a SHA-256: the chaining words, the length hashed so far, and the
/// tail of under one block not yet compressed. Unlike a hasher object, it can be saved (in 40
/// to 103 bytes) and resumed, and finished without being consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha256State {
    words: [u32; 8],
    len: u64,
    tail: [u8; SHA256_BLOCK_BYTES],
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            words: SHA256_IV,
            len: 0,
            tail: [0; SHA256_BLOCK_BYTES],
        }
    }
}

impl Sha256State {
    fn tail_len(&self) -> usize {
        (self.len % SHA256_BLOCK_BYTES as u64) as usize
    }

    /// Feeds `data` on.
    pub fn update(&mut self, mut data: &[u8]) {
        let filled = self.tail_len();
        self.len += data.len() as u64;
        if filled > 0 {
            let take = data.len().min(SHA256_BLOCK_BYTES - filled);
            self.tail[filled..filled + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if filled + take < SHA256_BLOCK_BYTES {
                return;
            }
            sha2::block_api::compress256(&mut self.words, std::slice::from_ref(&self.tail));
        }
        let (blocks, rest) = data.as_chunks::<SHA256_BLOCK_BYTES>();
        sha2::block_api::compress256(&mut self.words, blocks);
        self.tail[..rest.len()].copy_from_slice(rest);
    }

    /// The digest of everything fed so far (the state is unchanged: more may follow).
    pub fn finish(&self) -> [u8; 32] {
        let mut words = self.words;
        let filled = self.tail_len();
        let mut last = [[0u8; SHA256_BLOCK_BYTES]; 2];
        last[0][..filled].copy_from_slice(&self.tail[..filled]);
        last[0][filled] = 0x80;
        // The length takes the last 8 bytes; a tail of 56 bytes or more needs a second block.
        let blocks = if filled < SHA256_BLOCK_BYTES - 8 { 1 } else { 2 };
        last[blocks - 1][SHA256_BLOCK_BYTES - 8..].copy_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        sha2::block_api::compress256(&mut words, &last[..blocks]);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// What to compute over a body besides its crc32c.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Compute (and keep) the sha-256.
    pub sha256: bool,
    /// Compute the sha-512 (to verify it; it is not kept).
    pub sha512: bool,
}

/// Digests of a run of bytes, computed as they stream past.
#[derive(Clone, Debug, Default)]
pub struct Hasher {
    len: u64,
    crc32c: u32,
    sha256: Option<Sha256State>,
    sha512: Option<sha2::Sha512>,
}

impl Hasher {
    /// A hasher computing the crc32c and what `wanted` names.
    pub fn new(wanted: Wanted) -> Hasher {
        Hasher {
            len: 0,
            crc32c: 0,
            sha256: wanted.sha256.then(Sha256State::default),
            sha512: wanted.sha512.then(sha2::Sha512::new),
        }
    }

    /// Feeds `data` on.
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        if let Some(state) = &mut self.sha256 {
            state.update(data);
        }
        if let Some(state) = &mut self.sha512 {
            state.update(data);
        }
    }

    /// A hasher that was fed `len` bytes whose crc32c is `crc32c`, known without reading them
    /// (a concatenation's, combined from its sources' kept digests), and nothing else.
    pub fn of_crc32c(len: u64, crc32c: u32) -> Hasher {
        Hasher {
            len,
            crc32c,
            ..Hasher::default()
        }
    }

    /// True when it computes everything `wanted` names.
    pub fn has(&self, wanted: Wanted) -> bool {
        (!wanted.sha256 || self.sha256.is_some()) && (!wanted.sha512 || self.sha512.is_some())
    }

    /// Computes what `wanted` names and this hasher lacks, from `replay` feeding the same bytes
    /// again (once, and only if something is lacking): a concatenation hashes its gathered
    /// bytes with sha-256 only where its commit needs it.
    pub fn complete(
        &mut self,
        wanted: Wanted,
        replay: impl FnOnce(&mut dyn FnMut(&[u8])) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.has(wanted) {
            return Ok(());
        }
        let mut sha256 = (wanted.sha256 && self.sha256.is_none()).then(Sha256State::default);
        let mut sha512 = (wanted.sha512 && self.sha512.is_none()).then(sha2::Sha512::new);
        let mut fed = 0u64;
        replay(&mut |bytes| {
            fed += bytes.len() as u64;
            if let Some(state) = &mut sha256 {
                state.update(bytes);
            }
            if let Some(state) = &mut sha512 {
                state.update(bytes);
            }
        })?;
        if fed != self.len {
            return Err(io::Error::other(format!(
                "{fed} bytes replayed to hash, {} expected",
                self.len
            )));
        }
        self.sha256 = self.sha256.take().or(sha256);
        self.sha512 = self.sha512.take().or(sha512);
        Ok(())
    }

    /// The digests of everything fed.
    pub fn sums(&self) -> Sums {
        Sums {
            len: self.len,
            crc32c: self.crc32c,
            sha256: self.sha256.as_ref().map(Sha256State::finish),
            sha512: self.sha512.clone().map(|s| s.finalize().into()),
        }
    }

    /// What a file made of exactly these bytes keeps.
    pub fn kept(&self) -> Kept {
        Kept {
            len: self.len,
            crc32c: self.crc32c,
            sha256: self.sha256.clone(),
        }
    }
}

/// The digests of a run of bytes, as far as they were computed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    /// Bytes hashed.
    pub len: u64,
    pub crc32c: u32,
    pub sha256: Option<[u8; 32]>,
    pub sha512: Option<[u8; 64]>,
}

impl Sums {
    /// The digest by `algorithm`, if computed (big-endian for the crc32c, as RFC 9530's
    /// registry has it).
    pub fn get(&self, algorithm: Algorithm) -> Option<Vec<u8>> {
        match algorithm {
            Algorithm::Sha256 => self.sha256.map(|d| d.to_vec()),
            Algorithm::Sha512 => self.sha512.map(|d| d.to_vec()),
            Algorithm::Crc32c => Some(self.crc32c.to_be_bytes().to_vec()),
        }
    }
}

/// What is kept of a file's bytes: their length, crc32c, and the sha-256 state if any write
/// asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub len: u64,
    pub crc32c: u32,
    pub sha256: Option<Sha256State>,
}

impl Kept {
    /// The digests of the file.
    pub fn sums(&self) -> Sums {
        Sums {
            len: self.len,
            crc32c: self.crc32c,
            sha256: self.sha256.as_ref().map(Sha256State::finish),
            sha512: None,
        }
    }

    /// The file's state after `appended` (its crc32c and length) is added to its end, without
    /// rereading the file: the crc32cs are combined, and `replay` feeds the appended bytes on
    /// into the sha-256 state (it is called only if one is kept). For appends and
    /// concatenations alike.
    pub fn extended(
        &self,
        appended_crc32c: u32,
        appended_len: u64,
        replay: impl FnOnce(&mut Sha256State) -> io::Result<()>,
    ) -> io::Result<Kept> {
        let combined_len = usize::try_from(appended_len).map_err(|_| io::Error::other("append too long"))?;
        let sha256 = match &self.sha256 {
            Some(state) => {
                let mut state = state.clone();
                replay(&mut state)?;
                Some(state)
            }
            None => None,
        };
        Ok(Kept {
            len: self.len + appended_len,
            crc32c: crc32c::crc32c_combine(self.crc32c, appended_crc32c, combined_len),
            sha256,
        })
    }
}

/// Why a write's digests were refused; nothing was committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A digest the client sent differs from the one computed (the message names both).
    Mismatch(String),
    /// `Content-Digest` names only algorithms the service does not have.
    Unsupported(String),
    /// `Repr-Digest` names only algorithms the service does not have (answered with
    /// `Want-Repr-Digest`, RFC 9530 §4).
    UnsupportedRepr(String),
    /// A digest field (from the trailer section) is not well formed, or cannot be verified.
    Malformed(String),
}

/// The approval of a write's digests: the body's, and the file's after the write (`None` where
/// none are kept).
pub type Check<'a> = &'a dyn Fn(&Sums, Option<&Sums>) -> Result<(), Refused>;

/// What a write computes and verifies of its digests, and what it learns of the file's.
pub struct Plan<'a> {
    /// What to compute over the body besides its crc32c (the sha-256 is also kept).
    pub wanted: Wanted,
    /// Called once the body is whole and, for an append, under the file's lock with the
    /// file's digests after the append (`None` where none are kept): before anything is
    /// committed, so a refusal leaves the file as it was.
    pub check: Check<'a>,
    /// Set by a successful write: the digests of the whole file it committed, where known.
    pub repr: Option<Sums>,
}

impl Plan<'_> {
    /// A plan that verifies nothing (the crc32c is still computed and kept).
    #[cfg(test)]
    pub fn none() -> Plan<'static> {
        Plan {
            wanted: Wanted::default(),
            check: &|_, _| Ok(()),
            repr: None,
        }
    }
}

/// A body reader that hashes what it hands on.
pub struct Hashing<'a> {
    inner: &'a mut dyn io::Read,
    /// The digests of what was read so far.
    pub hasher: Hasher,
}

impl<'a> Hashing<'a> {
    /// Reads `inner`, hashing by `wanted`.
    pub fn new(inner: &'a mut dyn io::Read, wanted: Wanted) -> Hashing<'a> {
        Hashing {
            inner,
            hasher: Hasher::new(wanted),
        }
    }
}

impl io::Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The version of a file a kept digest describes: what changes whenever its bytes do, by the
/// service or by any other writer (size, modification time), and what tells one file from
/// another that took its name or inode number (inode, birth time where the filesystem has it).
/// Not the change time: writing the attribute itself changes that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ino: u64,
    birth: i64,
    birth_nsec: u32,
}

impl Identity {
    /// The version of the open `file` that `meta` shows.
    fn of(file: &File, meta: &Metadata) -> Identity {
        Identity::with_birth(meta, sys::created(file.as_fd(), meta))
    }

    /// True when `kept` (read from a kept digest) names the version `now`. A birth time of 0
    /// on either side means "not known", as written by a build or on a filesystem that has
    /// none: the static build before its own `statx`, whose digests would otherwise be dropped
    /// (and each append reread the whole file) while old and new replicas share a volume. Size,
    /// inode and nanosecond mtime still have to match; digests are off where times are coarse.
    fn names(&self, now: &Identity) -> bool {
        let unknown = |i: &Identity| i.birth == 0 && i.birth_nsec == 0;
        if unknown(self) || unknown(now) {
            self.without_birth() == now.without_birth()
        } else {
            self == now
        }
    }

    /// The same version with its birth time not known.
    fn without_birth(&self) -> Identity {
        Identity {
            birth: 0,
            birth_nsec: 0,
            ..*self
        }
    }

    /// The version `meta` shows of a file born at `born` (`None`: no birth time known).
    fn with_birth(meta: &Metadata, born: Option<std::time::SystemTime>) -> Identity {
        let (birth, birth_nsec) = born
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos()));
        Identity {
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            ino: meta.ino(),
            birth,
            birth_nsec,
        }
    }
}

/// Encodes a record: format, identity, crc32c, then the sha-256 words and tail if kept.
fn encode(identity: &Identity, kept: &Kept) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_RECORD_BYTES);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&identity.size.to_le_bytes());
    out.extend_from_slice(&identity.mtime.to_le_bytes());
    out.extend_from_slice(&identity.mtime_nsec.to_le_bytes());
    out.extend_from_slice(&identity.ino.to_le_bytes());
    out.extend_from_slice(&identity.birth.to_le_bytes());
    out.extend_from_slice(&identity.birth_nsec.to_le_bytes());
    out.extend_from_slice(&kept.crc32c.to_le_bytes());
    match &kept.sha256 {
        Some(state) => {
            out.push(1);
            for word in state.words {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&state.tail[..state.tail_len()]);
        }
        None => out.push(0),
    }
    out
}

/// Reads `n` bytes off the front of `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

/// Decodes a record; `None` if it is not one this version wrote whole.
fn decode(mut bytes: &[u8]) -> Option<(Identity, Kept)> {
    let b = &mut bytes;
    if take::<1>(b)? != [FORMAT_VERSION] {
        return None;
    }
    let identity = Identity {
        size: u64::from_le_bytes(take(b)?),
        mtime: i64::from_le_bytes(take(b)?),
        mtime_nsec: u32::from_le_bytes(take(b)?),
        ino: u64::from_le_bytes(take(b)?),
        birth: i64::from_le_bytes(take(b)?),
        birth_nsec: u32::from_le_bytes(take(b)?),
    };
    let crc32c = u32::from_le_bytes(take(b)?);
    let sha256 = match take::<1>(b)? {
        [0] => None,
        [1] => {
            let mut state = Sha256State {
                len: identity.size,
                ..Sha256State::default()
            };
            for word in &mut state.words {
                *word = u32::from_le_bytes(take(b)?);
            }
            let tail_len = state.tail_len();
            if b.len() != tail_len {
                return None;
            }
            state.tail[..tail_len].copy_from_slice(b);
            *b = &[];
            Some(state)
        }
        _ => return None,
    };
    if !b.is_empty() {
        return None;
    }
    let kept = Kept {
        len: identity.size,
        crc32c,
        sha256,
    };
    Some((identity, kept))
}

/// The record name of the file with inode `ino`.
fn record_name(ino: u64) -> OsString {
    OsString::from(format!("{RECORD_PREFIX}{ino}"))
}

/// True when `e` says the filesystem keeps no extended attributes.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP))
}

/// Keeps `kept` as the digests of `file`, in `dir`, as it is now (its metadata taken after its
/// last byte was written): in its extended attribute, else in a record beside it. Best effort:
/// where neither can be written, the previous one (if any) names a version that is gone, so no
/// reader takes it for this one.
pub fn store(dir: &Dir, file: &File, kept: &Kept) {
    match file.metadata() {
        Ok(meta) => store_as(dir, file, kept, &meta),
        Err(e) => log::warn!("could not keep a file's digest: {e}"),
    }
}

/// True when `a` and `b`, two looks at the same open file, show the same version of it, as a
/// kept digest names it (size, modification time, inode; the birth time is the open file's
/// own, the same in both).
pub fn same_version(a: &Metadata, b: &Metadata) -> bool {
    Identity::with_birth(a, None) == Identity::with_birth(b, None)
}

/// [`store`] for an append: `written` is the file's metadata taken right after the last byte
/// was written (before the sync). The digest is kept only if the file still is that version
/// now; if another writer changed it since, any kept digest is removed instead (it would name
/// a version that is gone, but a wrong one is worse than none at the next check). True when
/// `kept` is the file's digest (whether or not it could be kept).
pub fn store_if_unchanged(dir: &Dir, file: &File, kept: &Kept, written: &Metadata) -> bool {
    match file.metadata() {
        Ok(now) if same_version(&now, written) => {
            store_as(dir, file, kept, written);
            true
        }
        Ok(now) => {
            log::warn!(
                "another writer changed a file (inode {}) during an append: no digest kept for it",
                now.ino()
            );
            discard(dir, file, now.ino());
            false
        }
        Err(e) => {
            log::warn!("could not keep a file's digest: {e}");
            false
        }
    }
}

/// Removes what is kept for `file` (inode `ino`) in `dir`: its attribute, or its record.
pub fn discard(dir: &Dir, file: &File, ino: u64) {
    match sys::remove_xattr(file.as_fd(), XATTR_NAME) {
        Err(e) if unsupported(&e) => {
            let _ = dir.remove_file(&record_name(ino));
        }
        _ => {}
    }
}

/// Checks at start whether the volume under `root` stamps modification times finer than whole
/// seconds: a temp file is written [`PROBE_WRITES`] times and its mtime's nanoseconds looked
/// at. Where they stay 0, kept digests are turned off for this process (logged): none is kept,
/// none read. True when they are off. A volume the probe cannot write to keeps them on (its
/// writes fail anyway). On a FUSE volume (`fuse`) the probe is also synced, to see whether a
/// sync moves the mtime ([`identity_after_sync`]).
pub fn probe_timestamps(root: &Dir, fuse: bool) -> bool {
    // A file with no name where the volume has them (nothing to remove: no unlink at start),
    // else a probe file (random name, in the reserved namespace; no lock: a sweep of another
    // replica that removes it meanwhile changes nothing, as it is written through its
    // descriptor).
    let probed = |probe: &mut File| {
        let fine = writes_show_nanoseconds(probe);
        // Only a FUSE volume writes back on a sync (a local filesystem never moves the mtime
        // then), and a sync at start costs a slow disk, so only there is it tried.
        if fuse && sync_moves_mtime(probe) {
            SYNC_MOVES_MTIME.store(true, Ordering::Relaxed);
            log::info!(
                "the storage volume moves a file's modification time when it syncs it (a FUSE \
                 filesystem that writes back on fsync): an append's digests name the file as it is \
                 after its sync"
            );
        }
        fine
    };
    let fine = match root.create_unnamed() {
        Ok(mut probe) => probed(&mut probe),
        Err(_) => {
            let Ok(name) = super::dir::random_name(super::PROBE_PREFIX) else {
                return false;
            };
            let name = OsString::from(name);
            let Ok(mut probe) = root.create_new(&name) else {
                return false;
            };
            let fine = probed(&mut probe);
            let _ = root.remove_file(&name);
            fine
        }
    };
    if !fine {
        COARSE_TIMES.store(true, Ordering::Relaxed);
        log::warn!(
            "the storage volume stamps modification times in whole seconds: it cannot tell another \
             writer's change from the service's own within a second, so no file digest is kept or \
             answered from a kept one on it (uploads still answer the body's Repr-Digest; appends \
             and downloads none); see docs/operations.md"
        );
    }
    !fine
}

/// Writes `probe` up to [`PROBE_WRITES`] times; true as soon as its mtime shows nanoseconds (or
/// if it cannot be written or stat'ed: nothing is known then).
fn writes_show_nanoseconds(probe: &mut File) -> bool {
    let mut fine = false;
    for i in 0..PROBE_WRITES {
        if i > 0 {
            std::thread::sleep(PROBE_INTERVAL);
        }
        let written = probe.write_all(b"x").and_then(|()| probe.metadata());
        match written {
            Ok(meta) if meta.mtime_nsec() != 0 => {
                fine = true;
                break;
            }
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    fine
}

/// True when a write to `probe`, synced, shows another modification time after the sync than
/// right after the write.
fn sync_moves_mtime(probe: &mut File) -> bool {
    let before = probe.write_all(b"y").and_then(|()| probe.metadata());
    let after = probe.sync_data().and_then(|()| probe.metadata());
    match (before, after) {
        (Ok(before), Ok(after)) => (before.mtime(), before.mtime_nsec()) != (after.mtime(), after.mtime_nsec()),
        _ => false,
    }
}

/// True when an append's version (what its kept digests name) must be taken after its sync:
/// the volume moves modification times when it syncs. The check for another writer's change
/// then covers the time up to the sync's end less well (`docs/operations.md`).
pub fn identity_after_sync() -> bool {
    SYNC_MOVES_MTIME.load(Ordering::Relaxed)
}

/// True when kept digests are off (the volume's timestamps are whole seconds).
pub fn off() -> bool {
    COARSE_TIMES.load(Ordering::Relaxed)
}

/// Keeps `kept` for `file` as `meta` shows it.
fn store_as(dir: &Dir, file: &File, kept: &Kept, meta: &Metadata) {
    if off() {
        return;
    }
    if meta.len() != kept.len {
        // Not the bytes hashed: keep nothing rather than something wrong.
        discard(dir, file, meta.ino());
        return;
    }
    let record = encode(&Identity::of(file, meta), kept);
    match sys::set_xattr(file.as_fd(), XATTR_NAME, &record) {
        Ok(()) => {}
        Err(e) if unsupported(&e) => {
            RECORDS_IN_USE.store(true, Ordering::Relaxed);
            if let Err(e) = write_record(dir, meta.ino(), &record) {
                log::warn!("could not keep a file's digest (record): {e}");
            }
        }
        Err(e) => log::warn!("could not keep a file's digest (extended attribute): {e}"),
    }
}

/// Writes a record whole under a temp name, then renames it over the old one.
fn write_record(dir: &Dir, ino: u64, record: &[u8]) -> super::Result<()> {
    let mut temp = TempFile::create(dir)?;
    temp.file().write_all(record).map_err(super::StorageError::from_io)?;
    temp.rename_over(dir, &record_name(ino))
}

/// The digests kept for `file` in `dir`, if they describe it as `meta` shows it, whole (`len`,
/// its committed length, is all of it: no append is awaiting its rollback).
pub fn load(dir: Option<&Dir>, file: &File, meta: &Metadata, len: u64) -> Option<Kept> {
    if len != meta.len() || off() {
        return None;
    }
    let mut buf = [0u8; MAX_RECORD_BYTES];
    let n = match sys::get_xattr(file.as_fd(), XATTR_NAME, &mut buf) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => read_record(dir?, meta.ino(), &mut buf)?,
        Err(_) => return None,
    };
    let (identity, kept) = decode(&buf[..n])?;
    identity.names(&Identity::of(file, meta)).then_some(kept)
}

/// Bytes read at a time by [`hash_committed`].
const HASH_READ_BYTES: usize = 1 << 20;

/// The crc32c of the first `len` bytes of `file`, read once (for an append to a file with no
/// kept digest, under its lock: from then on its appends extend it). The only time the service
/// reads a file to hash it; at ~18 GB/s for the crc32c, the read is the cost
/// (`docs/write-protocol.md`). `None` when the file is shorter, or cannot be read.
pub fn hash_committed(file: &File, len: u64) -> Option<Kept> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; HASH_READ_BYTES];
    let (mut at, mut crc) = (0u64, 0u32);
    while at < len {
        let want = usize::try_from(len - at).map_or(buf.len(), |left| left.min(buf.len()));
        match file.read_at(&mut buf[..want], at) {
            Ok(0) => return None,
            Ok(n) => {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(Kept {
        len,
        crc32c: crc,
        sha256: None,
    })
}

/// True when a read of the file's digests needs its directory ([`load`]): on a volume without
/// extended attributes (which then counts as keeping records, for [`carry`] and [`forget`]).
pub fn needs_dir(file: &File) -> bool {
    let records = matches!(sys::get_xattr(file.as_fd(), XATTR_NAME, &mut []), Err(e) if unsupported(&e));
    if records {
        RECORDS_IN_USE.store(true, Ordering::Relaxed);
    }
    records
}

/// Notes that records are in use on this volume (one was found on it), so moves, replaces and
/// deletes look after them from now on, also before this process wrote one.
pub fn note_records_in_use() {
    RECORDS_IN_USE.store(true, Ordering::Relaxed);
}

/// The inode number a record's name is for, if `name` is a record's.
pub fn record_inode(name: &str) -> Option<u64> {
    name.strip_prefix(RECORD_PREFIX)?.parse().ok()
}

/// Reads the record of inode `ino` in `dir` into `buf`; its length.
fn read_record(dir: &Dir, ino: u64, buf: &mut [u8]) -> Option<usize> {
    let mut file = dir.open_file(&record_name(ino), Access::Read).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).ok()? {
            0 => return Some(n),
            m => n += m,
        }
    }
    // Longer than any record: not one.
    None
}

/// After the file with inode `ino` moved from `from` to `to` (under its lock), its record goes
/// with it, where records are in use. Best effort: a record left behind names a file that is
/// not in that directory, and the moved file has none (never a wrong one).
pub fn carry(from: &Dir, to: &Dir, ino: u64) {
    if RECORDS_IN_USE.load(Ordering::Relaxed) {
        let name = record_name(ino);
        let _ = from.rename(&name, to, &name);
    }
}

/// Removes the record of the file `file` (inode `ino`) in `dir`, deleted under its lock, where
/// the volume keeps records: left, it would outlive the file and keep the directory from being
/// removed by anything else (`rmdir` of a directory that lists empty).
pub fn forget_deleted(dir: &Dir, file: &File, ino: u64) {
    if RECORDS_IN_USE.load(Ordering::Relaxed) || needs_dir(file) {
        let _ = dir.remove_file(&record_name(ino));
    }
}

/// Removes the record of the file with inode `ino` in `dir` (replaced or deleted), where
/// records are in use.
pub fn forget(dir: &Dir, ino: u64) {
    if RECORDS_IN_USE.load(Ordering::Relaxed) {
        let _ = dir.remove_file(&record_name(ino));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    fn sha256(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn the_resumable_sha256_matches_sha2_at_every_split_and_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let mut state = Sha256State::default();
            state.update(&data[..len]);
            assert_eq!(state.finish(), sha256(&data[..len]), "length {len}");
        }
        for split in 0..data.len() {
            let mut state = Sha256State::default();
            state.update(&data[..split]);
            let _ = state.finish();
            state.update(&data[split..]);
            assert_eq!(state.finish(), sha256(&data), "split {split}");
        }
    }

    #[test]
    fn an_extended_state_equals_the_state_of_the_whole() {
        let (a, b) = (vec![b'a'; 1000], b"tail bytes".to_vec());
        let mut first = Hasher::new(Wanted {
            sha256: true,
            sha512: false,
        });
        first.update(&a);
        let mut second = Hasher::new(Wanted::default());
        second.update(&b);
        let extended = first
            .kept()
            .extended(second.sums().crc32c, b.len() as u64, |s| {
                s.update(&b);
                Ok(())
            })
            .unwrap();
        let mut whole = Hasher::new(Wanted {
            sha256: true,
            sha512: false,
        });
        whole.update(&a);
        whole.update(&b);
        assert_eq!(extended, whole.kept());
        assert_eq!(extended.sums().sha256, Some(sha256(&[a, b].concat())));
    }

    #[test]
    fn a_kept_digest_without_a_birth_time_still_names_its_version() {
        let dir = test_dir("digest-unknown-birth");
        let path = dir.join("f");
        std::fs::write(&path, b"x".repeat(10)).unwrap();
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let born = Identity::with_birth(&meta, Some(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)));
        let unknown = Identity::with_birth(&meta, None);
        assert!(
            unknown.names(&born) && born.names(&unknown),
            "a missing birth time is not a mismatch"
        );
        let other_birth = Identity::with_birth(&meta, Some(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_001)));
        assert!(!born.names(&other_birth), "two known birth times must agree");
        let grown = Identity {
            size: unknown.size + 1,
            ..unknown
        };
        assert!(!unknown.names(&grown), "the rest must still match");
    }

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_none() {
        let dir = test_dir("digest-record");
        let path = dir.join("f");
        std::fs::write(&path, b"x".repeat(100)).unwrap();
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut hasher = Hasher::new(Wanted {
            sha256: true,
            sha512: false,
        });
        hasher.update(&b"x".repeat(100));
        let record = encode(&Identity::of(&file, &meta), &hasher.kept());
        assert!(record.len() <= MAX_RECORD_BYTES);
        assert_eq!(decode(&record), Some((Identity::of(&file, &meta), hasher.kept())));
        for cut in 0..record.len() {
            assert_eq!(decode(&record[..cut]), None, "cut at {cut}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    #[test]
    fn a_kept_digest_is_gone_once_the_file_changes_behind_it() {
        let dir = test_dir("digest-kept");
        let path = dir.join("f");
        std::fs::write(&path, b"hello").unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let handle = Dir::open(&dir).unwrap();
        let mut hasher = Hasher::new(Wanted::default());
        hasher.update(b"hello");
        store(&handle, &file, &hasher.kept());
        let meta = file.metadata().unwrap();
        if sys::get_xattr(file.as_fd(), XATTR_NAME, &mut [0u8; MAX_RECORD_BYTES]).is_err() {
            eprintln!("skipped: no user.* extended attributes on {}", dir.display());
            return;
        }
        assert_eq!(load(Some(&handle), &file, &meta, 5), Some(hasher.kept()));
        assert_eq!(
            load(Some(&handle), &file, &meta, 4),
            None,
            "an append awaiting rollback"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"HELLO").unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(load(Some(&handle), &file, &meta, 5), None);
    }
}
