//! Crash records of appends: how to undo a batch of appends that died between its first byte
//! and its commit.
//!
//! Each file appended to has a record slot `.http-nas-journal-<inode>` beside it, [`SLOT_BYTES`]
//! long, made once and then rewritten in place ([`Slot`]): armed (the file's identity: device,
//! inode, birth time where the filesystem keeps one, a random id; the size to return to; the
//! length and checksum of the batch; the boot it was written in) before a batch's first byte,
//! idle after its sync, which is the batch's commit point. Only the file's lock holder writes
//! it, so an armed record found under the lock (or by a reader under a shared lock) belongs to
//! a dead appender: in this boot its batch is undone; after a reboot, kept if the range matches
//! its checksum (an acknowledged batch whose idle rewrite a power cut lost). Readers look for
//! the record of every file they read: no cheaper sign that one may exist is kept (a sign in
//! the file's mode can only be set by the file's owner, and an older binary's record has
//! none). See `docs/write-protocol.md`.
//!
//! An appender also holds an exclusive lock on the record file itself while it uses it (a
//! batch). That lets a sweep tell a record whose file is not
//! beside it (an orphan: its appender died and the file was removed or renamed by another
//! writer, or the name was planted) from a live append's record, without the file's lock: it
//! removes the record only if it can take the record's own lock at once and the name still
//! points to the record it locked. A sweep that removes a record in the instant between its
//! creation and its lock is noticed (the name no longer points to the locked file, or its lock
//! is held: then the appender waits for it, bounded), and the appender writes it again.
//!
//! **A record's name is only ever unlinked by a holder of the lock on the record file under
//! that name, checked to be under it right before the unlink**: the appender (its own record),
//! the sweep (an orphan, [`remove_if_unlocked`]) and the file's holder clearing a dead
//! appender's record ([`settle`], which waits, bounded, for the record's lock: a sweep may be
//! removing the same record). New records are made with `O_EXCL`, which fails while the name
//! exists. So while one remover holds the lock, nobody else removes or re-creates the name, and
//! an unlink delayed by any amount still removes what its remover checked; a sweep can never
//! remove a record written anew under the same name. (Something that is not a regular file at
//! a record's name cannot be locked: only the file's holder removes it, the sweep leaves it.)
//!
//! Records are read defensively, as files on a volume other writers share: opened without
//! following symlinks or blocking, only if regular and at most [`MAX_RECORD_BYTES`]; anything
//! that does not parse in full (a record torn by a crash while it was written, which means no
//! byte of its append was written either, or junk) is not a record.

use super::dir::{Access, Dir, random_id};
use super::{Result, StorageError};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::LazyLock;
use std::time::UNIX_EPOCH;

/// Prefix of crash records (inside the reserved namespace); the file's inode number follows.
pub const JOURNAL_PREFIX: &str = ".http-nas-journal-";
/// First line of a record, naming its format: a slot rewritten in place, with a range and a
/// checksum of its own text.
const MAGIC: &str = "http-nas append journal v3";
/// First line of a record of the older format (created and removed per append), still read so
/// that a crash of an older binary is recovered: it always rolls back.
const MAGIC_V2: &str = "http-nas append journal v2";
/// Size of a record slot, in bytes: one sector, rewritten whole at offset 0 (padded with
/// newlines), so a rewrite in place changes no metadata and its sync is a data sync.
pub const SLOT_BYTES: usize = 512;
/// Bytes read at a time when checking a range's checksum.
const CHECK_CHUNK_BYTES: usize = 256 * 1024;
/// Last line of a record: a record without it was torn while being written.
const END: &str = "end";
/// Largest record read, in bytes (a real one is about 150).
const MAX_RECORD_BYTES: u64 = 4096;

/// Who a file is, in a way a later file cannot copy: inode numbers are reused (ext4 hands a
/// freed number to the next new file), birth times are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    /// Birth time in nanoseconds since the epoch, where the filesystem records one.
    born: Option<u128>,
}

impl FileId {
    /// The identity of the open `file`, whose metadata is `meta`.
    pub fn of(file: &File, meta: &Metadata) -> FileId {
        let born = crate::sys::created(std::os::fd::AsFd::as_fd(file), meta)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            born,
        }
    }

    /// True when both describe one file (birth times compared where both are known). The
    /// device is not compared: every mount of a shared volume (every replica's pod) gives it
    /// its own `st_dev`, and a record is only ever looked up in its file's own directory, which
    /// fixes the filesystem. Comparing it made a replica ignore the record of an append that
    /// died on another one, and append after its torn bytes.
    fn matches(&self, other: &FileId) -> bool {
        self.ino == other.ino && (self.born.is_none() || other.born.is_none() || self.born == other.born)
    }
}

/// What a record says of the bytes after its `before`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    /// Between batches: nothing to undo.
    Idle,
    /// A batch of `len` bytes written at `before`, whose checksum ([`Checksum`]) is `sum`:
    /// whole (and kept) exactly when the file holds those bytes.
    Batch { len: u64, sum: u64 },
    /// A batch whose sync failed and that could not be cut back: always rolled back, whatever
    /// the page cache shows (after a failed sync it may show bytes the disk does not hold).
    Poisoned { len: u64 },
    /// A batch of `len` bytes written without `fsync` (no power cut is survived then, so no
    /// checksum is kept): always rolled back.
    Unsummed { len: u64 },
    /// A record of the older format: always rolled back.
    Legacy,
}

/// One crash record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Random, so two records are never the same one.
    pub id: String,
    /// The file the append went to.
    pub file: FileId,
    /// Its size before the batch: what a rollback returns it to.
    pub before: u64,
    /// What was appended after `before`.
    pub range: Range,
    /// The boot of the kernel that wrote the record ([`this_boot`]), where known.
    pub boot: Option<String>,
}

impl Record {
    /// A new record for a batch to the file `file`, which is `before` bytes now.
    pub fn new(file: FileId, before: u64, range: Range) -> Result<Record> {
        Ok(Record {
            id: random_id().map_err(StorageError::from_io)?,
            file,
            before,
            range,
            boot: this_boot().map(str::to_string),
        })
    }

    /// True when the record asks nothing of its file (a slot between batches).
    pub fn is_idle(&self) -> bool {
        self.range == Range::Idle
    }

    /// The text of the record, padded to exactly [`SLOT_BYTES`]; its `check` line is the
    /// checksum of the lines before it, so a rewrite torn by a power cut (part old, part new
    /// text) does not parse.
    fn encode(&self) -> Vec<u8> {
        let born = self.file.born.map_or("-".to_string(), |b| b.to_string());
        let range = match &self.range {
            Range::Idle => "idle".to_string(),
            Range::Batch { len, sum } => format!("{len} {sum:016x}"),
            Range::Poisoned { len } => format!("{len} poisoned"),
            Range::Unsummed { len } => format!("{len} -"),
            Range::Legacy => "legacy".to_string(),
        };
        let body = format!(
            "{MAGIC}\nid {}\ndev {}\nino {}\nborn {born}\nbefore {}\nrange {range}\nboot {}\n",
            self.id,
            self.file.dev,
            self.file.ino,
            self.before,
            self.boot.as_deref().unwrap_or("-")
        );
        let check = Checksum::of(body.as_bytes());
        let mut text = format!("{body}check {check:016x}\n{END}\n").into_bytes();
        if text.len() < SLOT_BYTES {
            text.resize(SLOT_BYTES, b'\n');
        }
        text
    }

    fn decode(text: &str) -> Option<Record> {
        if text.starts_with(&format!("{MAGIC_V2}\n")) {
            return Self::decode_v2(text);
        }
        let (main, pad) = text.split_once(&format!("\n{END}\n"))?;
        pad.bytes().all(|b| b == b'\n').then_some(())?;
        let at = main.rfind("\ncheck ")?;
        let (body, check) = (&main[..=at], &main[at + 1..]);
        let check = u64::from_str_radix(check.strip_prefix("check ")?, 16).ok()?;
        (Checksum::of(body.as_bytes()) == check).then_some(())?;
        let mut lines = body.lines();
        (lines.next()? == MAGIC).then_some(())?;
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(str::to_string);
        let (id, file, before) = Self::decode_head(&mut field)?;
        let range = match field("range")?.as_str() {
            "idle" => Range::Idle,
            "legacy" => Range::Legacy,
            r => match r.split_once(' ')? {
                (len, "poisoned") => Range::Poisoned { len: len.parse().ok()? },
                (len, "-") => Range::Unsummed { len: len.parse().ok()? },
                (len, sum) => Range::Batch {
                    len: len.parse().ok()?,
                    sum: u64::from_str_radix(sum, 16).ok()?,
                },
            },
        };
        let boot = match field("boot")?.as_str() {
            "-" => None,
            b => Some(b.to_string()),
        };
        Some(Record {
            id,
            file,
            before,
            range,
            boot,
        })
    }

    /// The fields both formats begin with, in order: the record's id, the file it is for, and
    /// the size to return to. `field` yields the next line's value for a key.
    fn decode_head(field: &mut impl FnMut(&str) -> Option<String>) -> Option<(String, FileId, u64)> {
        let id = field("id")?;
        let dev = field("dev")?.parse().ok()?;
        let ino = field("ino")?.parse().ok()?;
        let born = match field("born")?.as_str() {
            "-" => None,
            b => Some(b.parse().ok()?),
        };
        let before = field("before")?.parse().ok()?;
        Some((id, FileId { dev, ino, born }, before))
    }

    /// A record of the older format: `end` as its last line, no checksum, always rolled back.
    fn decode_v2(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        (lines.next()? == MAGIC_V2).then_some(())?;
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(str::to_string);
        let (id, file, before) = Self::decode_head(&mut field)?;
        (lines.next()? == END && lines.next().is_none()).then_some(())?;
        Some(Record {
            id,
            file,
            before,
            range: Range::Legacy,
            boot: None,
        })
    }

    /// The committed length of `file` (`size` bytes now), for which this record is: its size
    /// between batches. After a batch that died: written in this boot of this kernel, the
    /// batch never committed (its commit point, the slot's idle rewrite, would be seen here: the
    /// page cache is one), so its size before; written before a reboot (a power cut may have
    /// lost the unsynced idle rewrite of an acknowledged batch) or by another machine, the
    /// batch's end if the file holds the whole batch (its checksum matches), else its size
    /// before. Call under a lock on the file.
    fn committed_of(&self, file: &File, size: u64) -> io::Result<u64> {
        let this_boot = self.boot.is_some() && self.boot.as_deref() == this_boot();
        Ok(match self.range {
            Range::Idle => size,
            Range::Batch { len, sum } if !this_boot => match self.before.checked_add(len) {
                Some(end) if size >= end && range_checksum(file, self.before, len)? == sum => end,
                _ => self.before.min(size),
            },
            Range::Batch { .. } | Range::Poisoned { .. } | Range::Unsummed { .. } | Range::Legacy => {
                self.before.min(size)
            }
        })
    }
}

/// Where the kernel names its boot: a random id, new at every boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The id of this boot of the kernel (shared by every process and container on the machine,
/// new after a reboot), read once; `None` where it cannot be read.
pub fn this_boot() -> Option<&'static str> {
    static BOOT: LazyLock<Option<String>> = LazyLock::new(|| {
        std::fs::read_to_string(BOOT_ID_PATH)
            .ok()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
    });
    BOOT.as_deref()
}

/// A 64-bit checksum of a byte stream, for telling a whole batch from a torn one after a crash
/// (torn bytes are zeros, old blocks or part of the batch: a match by chance is about 2^-64).
/// Not a defence against a writer who forges data: it only compares what the service wrote
/// with what a crash left. Word-wise, so it costs little next to the write it guards.
#[derive(Clone, Debug)]
pub struct Checksum {
    state: u64,
    len: u64,
    pending: [u8; 8],
    filled: usize,
}

/// Multipliers and offsets of the checksum's mixing (odd 64-bit constants).
const MIX_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_ADD: u64 = 0xD6E8_FEB8_6659_FD93;
const FINAL_MUL: u64 = 0xFF51_AFD7_ED55_8CCD;

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            state: MIX_ADD,
            len: 0,
            pending: [0; 8],
            filled: 0,
        }
    }
}

impl Checksum {
    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut sum = Checksum::default();
        sum.update(bytes);
        sum.finish()
    }

    fn mix(state: u64, word: u64) -> u64 {
        let x = (state ^ word).wrapping_mul(MIX_MUL);
        (x ^ (x >> 32)).wrapping_add(MIX_ADD)
    }

    /// Adds `bytes` to the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.filled > 0 {
            let take = (8 - self.filled).min(bytes.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < 8 {
                return;
            }
            self.state = Self::mix(self.state, u64::from_le_bytes(self.pending));
            self.filled = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.state = Self::mix(self.state, u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u64 {
        let mut state = self.state;
        if self.filled > 0 {
            let mut word = [0u8; 8];
            word[..self.filled].copy_from_slice(&self.pending[..self.filled]);
            state = Self::mix(state, u64::from_le_bytes(word));
        }
        let mut h = Self::mix(state, self.len);
        h ^= h >> 33;
        h = h.wrapping_mul(FINAL_MUL);
        h ^ (h >> 29)
    }
}

/// A reader that adds every byte it reads from `inner` to a [`Checksum`]: a body's checksum
/// taken as it arrives, so a batch that starts with a body spooled to a file need not read it
/// back for its crash record.
pub struct Summing<'a> {
    inner: &'a mut dyn io::Read,
    /// The checksum state of what was read so far.
    pub sum: Checksum,
}

impl<'a> Summing<'a> {
    /// Reads `inner` from its start.
    pub fn new(inner: &'a mut dyn io::Read) -> Summing<'a> {
        Summing {
            inner,
            sum: Checksum::default(),
        }
    }
}

impl io::Read for Summing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

/// The checksum of `len` bytes of `file` at `at` (a short file fails as `UnexpectedEof`).
fn range_checksum(file: &File, at: u64, len: u64) -> io::Result<u64> {
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; CHECK_CHUNK_BYTES.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(buf.len());
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[..want], at + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "range shorter than recorded",
            ));
        }
        sum.update(&buf[..n]);
        done += n as u64;
    }
    Ok(sum.finish())
}

/// What is at a record's name.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Absent,
    /// Something that is not a whole record (torn by a crash while written, or junk).
    Junk,
    /// A record.
    Record(Record),
}

/// The name of the record for the file with inode `ino`.
pub fn name_for(ino: u64) -> String {
    format!("{JOURNAL_PREFIX}{ino}")
}

/// The inode a record's name is for, if `name` is one.
pub fn inode_in_name(name: &str) -> Option<u64> {
    name.strip_prefix(JOURNAL_PREFIX)?.parse().ok()
}

/// Reads the record for inode `ino` in `dir`.
pub fn read(dir: &Dir, ino: u64) -> Result<Found> {
    let name = name_for(ino);
    let file = match dir.open_file(OsStr::new(&name), Access::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        // A symlink, FIFO or device planted at the name is junk, not a reason to fail.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => return Ok(Found::Junk),
        Err(e) => return Err(StorageError::from_io(e)),
    };
    read_open(&file)
}

/// True when the record for inode `ino` in `dir` is an idle slot (a file between batches of
/// appends: nothing to undo).
pub fn is_idle(dir: &Dir, ino: u64) -> Result<bool> {
    Ok(matches!(read(dir, ino)?, Found::Record(r) if r.is_idle()))
}

/// Reads the record in the open record file `file`: only a regular file of at most
/// [`MAX_RECORD_BYTES`] that parses in full is one.
fn read_open(file: &File) -> Result<Found> {
    let meta = file.metadata().map_err(StorageError::from_io)?;
    if !meta.is_file() || meta.len() > MAX_RECORD_BYTES {
        return Ok(Found::Junk);
    }
    let mut buf = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        match std::os::unix::fs::FileExt::read_at(file, &mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::from_io(e)),
        }
    }
    buf.truncate(filled);
    Ok(match std::str::from_utf8(&buf).ok().and_then(Record::decode) {
        Some(record) => Found::Record(record),
        None => Found::Junk,
    })
}

/// The length readers may see of the open `file` (metadata `meta`) in `dir`: its size, or,
/// when a batch of appends to it died, that batch's end if it is whole or its start if not.
/// Call under at least a shared lock on the file.
pub fn committed_len(dir: &Dir, file: &File, meta: &Metadata) -> Result<u64> {
    committed_len_and_clean(dir, file, meta).map(|(len, _)| len)
}

/// [`committed_len`], and whether the file is *clean*: no record that could ever cap it was
/// found (none, or an idle slot), so its committed length is its size for as long as the file
/// does not change ([`super::clean_versions`]). An armed record, even another file's, or junk
/// at the record's name, is not clean.
pub fn committed_len_and_clean(dir: &Dir, file: &File, meta: &Metadata) -> Result<(u64, bool)> {
    match read(dir, meta.ino())? {
        Found::Record(r) if r.is_idle() => Ok((meta.len(), true)),
        // An idle record leaves the size as it is, whoever it names: its identity (a birth
        // time, one more system call in the static build) is read only for an armed one.
        Found::Record(r) if r.file.matches(&FileId::of(file, meta)) => {
            Ok((r.committed_of(file, meta.len()).map_err(StorageError::from_io)?, false))
        }
        Found::Record(_) | Found::Junk => Ok((meta.len(), false)),
        Found::Absent => Ok((meta.len(), true)),
    }
}

/// The committed length of the open `file` in `dir` while someone else holds its exclusive
/// lock, without waiting for it: known only when a batch of appends to it is between its armed
/// record and its commit. The record is read, then the file's size, then the record again: the
/// same armed record (same random id) both times means that batch was uncommitted the whole
/// while (a slot is rewritten only at a batch's start, commit or rollback, and an id never
/// comes back), so the committed length is its size before. Anything else (no record or an
/// idle one: the holder may be an appender about to arm it, with bytes about to land, or a
/// replace or move; a record that changed) is `None`: the size on disk might count bytes
/// nobody committed.
pub fn committed_len_unlocked(dir: &Dir, file: &File) -> Result<Option<u64>> {
    let meta = file.metadata().map_err(StorageError::from_io)?;
    let Found::Record(first) = read(dir, meta.ino())? else {
        return Ok(None);
    };
    if first.is_idle() || !first.file.matches(&FileId::of(file, &meta)) {
        return Ok(None);
    }
    let size = file.metadata().map_err(StorageError::from_io)?.len();
    Ok(match read(dir, meta.ino())? {
        Found::Record(again) if again == first => Some(first.before.min(size)),
        _ => None,
    })
}

/// Undoes what a dead batch left in `file` (size `size`), as its holder: cuts it to the
/// record's committed length, synced (always: this runs rarely, and a cut lost to a power cut
/// could expose the torn bytes again). Returns the length cut to, if it cut.
fn undo(file: &File, size: u64, record: &Record) -> Result<Option<u64>> {
    let keep = record.committed_of(file, size).map_err(StorageError::from_io)?;
    if size <= keep {
        return Ok(None);
    }
    file.set_len(keep)
        .and_then(|()| file.sync_all())
        .map_err(StorageError::from_io)?;
    Ok(Some(keep))
}

/// The crash record of one file, open and under its own exclusive lock, taken by the holder
/// of the file's lock for one batch of appends. The name is created once (the file's first
/// append) and then rewritten in place: armed before a batch, idle after it (see
/// `docs/write-protocol.md`, "An append").
pub struct Slot<'a> {
    dir: &'a Dir,
    record: File,
    /// The inode number of the file the slot is for (its name).
    ino: Option<u64>,
    /// True until the slot's name and size are on disk (a new slot, or one grown or cut to
    /// [`SLOT_BYTES`]): its first arming syncs its metadata and directory too.
    fresh: bool,
    /// Created for this batch and not (yet) needed: removed again when dropped, so a file
    /// whose only append was refused or rolled back keeps no slot.
    created: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // Ours and locked: unlinked only if the name is still this file (see the module doc).
        let (Ok(meta), Some(ino)) = (self.record.metadata(), self.ino) else {
            return;
        };
        let name = name_for(ino);
        if self.dir.stat(OsStr::new(&name)).is_ok_and(|now| now.is(&meta))
            && let Err(e) = self.dir.remove_file(OsStr::new(&name))
        {
            log::warn!("could not remove an unused crash record slot: {e}");
        }
    }
}

impl<'a> Slot<'a> {
    /// Under the exclusive lock of `file` (metadata `meta`) in `dir`: its record slot, after
    /// undoing what a dead appender left (returned: the length cut to). Whatever else is at
    /// the name (junk, the record of an earlier file with the same inode number) is
    /// overwritten; something that is not a regular file there is removed first.
    ///
    /// The record's own lock is waited for, bounded: the only other holder can be a sweep
    /// removing it; once locked, the name is checked to still be the locked file, and a name
    /// that is free is created with `O_EXCL` (see "Who removes a crash record").
    pub fn take(dir: &'a Dir, file: &File, meta: &Metadata) -> Result<(Slot<'a>, Option<u64>)> {
        let name = name_for(meta.ino());
        let name = OsStr::new(&name);
        for _ in 0..MAX_RECORD_ATTEMPTS {
            match super::lock::lock(dir, name, Access::Write) {
                Ok(Some(held)) => {
                    let mut slot = Slot {
                        dir,
                        fresh: held.meta.len() != SLOT_BYTES as u64,
                        record: held.file,
                        ino: Some(meta.ino()),
                        created: false,
                    };
                    let cut = match read_open(&slot.record)? {
                        Found::Record(r) if !r.is_idle() && r.file.matches(&FileId::of(file, meta)) => {
                            let cut = undo(file, meta.len(), &r)?;
                            // Settled: idle, so readers need not check the range again (not
                            // synced: if lost, the record still gives the same answer).
                            let now = file.metadata().map_err(StorageError::from_io)?;
                            slot.write(&Record::new(FileId::of(file, &now), now.len(), Range::Idle)?)
                                .map_err(StorageError::from_io)?;
                            cut
                        }
                        _ => None,
                    };
                    return Ok((slot, cut));
                }
                Ok(None) => {}
                Err(StorageError::NotRegular | StorageError::IsADirectory) => {
                    // Planted; only the file's holder removes it (the sweep leaves it).
                    match dir.remove_file(name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StorageError::from_io(e)),
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let record = match dir.create_new(name) {
                Ok(record) => record,
                // Created meanwhile (by a writer of another version, or planted): look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::from_io(e)),
            };
            super::lock::wait_exclusive(&record)?;
            let locked = record.metadata().map_err(StorageError::from_io)?;
            if !dir.stat(name).is_ok_and(|now| now.is(&locked)) {
                // A sweep took it for an orphan between its creation and the lock: again.
                continue;
            }
            return Ok((
                Slot {
                    dir,
                    record,
                    ino: Some(meta.ino()),
                    fresh: true,
                    created: true,
                },
                None,
            ));
        }
        Err(StorageError::Io(io::Error::other(
            "the crash record kept being removed before it could be locked",
        )))
    }

    /// Rewrites the slot with `record`, in place, unsynced.
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let text = record.encode();
        std::os::unix::fs::FileExt::write_all_at(&self.record, &text, 0)?;
        if self.fresh && self.record.metadata()?.len() != text.len() as u64 {
            self.record.set_len(text.len() as u64)?;
        }
        Ok(())
    }

    /// Arms the slot for a batch of `len` bytes with checksum `sum` (none without `fsync`: such
    /// a batch is always undone after a crash) to be written to `file`
    /// (metadata `meta`) at `before`, durably with `fsync` (an in-place data sync; the first
    /// time, the slot's metadata and directory entry too), before any byte of it is written.
    /// The returned guard commits the batch or rolls it back.
    pub fn begin<'s>(
        &'s mut self,
        file: &'s File,
        meta: &Metadata,
        before: u64,
        len: u64,
        sum: Option<u64>,
        fsync: bool,
    ) -> Result<Uncommitted<'s, 'a>> {
        let range = match sum {
            Some(sum) => Range::Batch { len, sum },
            None => Range::Unsummed { len },
        };
        let armed = Record::new(FileId::of(file, meta), before, range)?;
        self.write(&armed).map_err(StorageError::from_io)?;
        if fsync {
            let synced = if self.fresh {
                self.record.sync_all().and_then(|()| self.dir.sync())
            } else {
                self.record.sync_data()
            };
            synced.map_err(StorageError::from_io)?;
        }
        self.fresh = false;
        Ok(Uncommitted {
            slot: self,
            file,
            id: armed.file,
            before,
            len,
            fsync,
            committed: false,
        })
    }
}

/// A batch of appends between its armed record and its commit, under the file's exclusive
/// lock: the guard that makes it all or nothing, as [`super::temp::TempFile`] is for a new file.
///
/// [`Slot::begin`] makes the armed record durable before any byte of the batch is written;
/// [`Uncommitted::commit`], called once the batch's bytes are synced, writes the slot idle
/// (unsynced: an armed record over a whole range keeps it). Dropped before that (a failed write
/// or sync, a panic), it cuts the file back to its size before, synced, then writes the slot
/// idle; if the cut or its sync fails, it writes the slot poisoned, so the next holder (or
/// reader) cuts the file back whatever the page cache shows; if even that fails, it logs.
pub struct Uncommitted<'s, 'a> {
    slot: &'s mut Slot<'a>,
    file: &'s File,
    /// The file as its records name it (taken once, for the armed record).
    id: FileId,
    before: u64,
    len: u64,
    fsync: bool,
    committed: bool,
}

impl Uncommitted<'_, '_> {
    /// The commit point of a batch whose bytes are written and (with `fsync`) synced: the
    /// slot goes idle (unsynced). From then on the batch stays; before it, a crash in this boot
    /// undoes the batch. On failure the guard rolls back, so the error the client gets is true.
    pub fn commit(mut self) -> Result<()> {
        let end = self.before + self.len;
        let idle = Record::new(self.id.clone(), end, Range::Idle)?;
        self.slot.write(&idle).map_err(StorageError::from_io)?;
        self.committed = true;
        self.slot.created = false;
        Ok(())
    }
}

impl Drop for Uncommitted<'_, '_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let before = self.before;
        let cut = self
            .file
            .set_len(before)
            .and_then(|()| if self.fsync { self.file.sync_all() } else { Ok(()) });
        let range = match cut {
            Ok(()) => Range::Idle,
            Err(e) => {
                log::error!("could not cut back a failed append (poisoning its crash record): {e}");
                Range::Poisoned { len: self.len }
            }
        };
        let poisoned = range != Range::Idle;
        if poisoned {
            self.slot.created = false;
        }
        let written = Record::new(self.id.clone(), before, range).and_then(|record| {
            self.slot.write(&record).map_err(StorageError::from_io)?;
            if poisoned && self.fsync {
                self.slot.record.sync_data().map_err(StorageError::from_io)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            log::error!("could not rewrite the crash record of a failed append (the next writer settles it): {e}");
        }
    }
}

/// Most times a record is taken again because a sweep removed it before it was locked.
const MAX_RECORD_ATTEMPTS: usize = 16;

/// Leaves the record of an append to the file with `meta` that died at `before` bytes, as a
/// dead appender does: armed, and no longer locked (a dead process holds no lock).
#[cfg(test)]
pub fn plant_dead(dir: &Dir, file: &File, before: u64) -> Result<()> {
    let meta = &file.metadata().map_err(StorageError::from_io)?;
    let (mut slot, _) = Slot::take(dir, file, meta)?;
    slot.created = false;
    slot.write(&Record::new(
        FileId::of(file, meta),
        before,
        Range::Poisoned { len: 1 },
    )?)
    .map_err(StorageError::from_io)
}

/// Removes the record `name` in `dir` if it is an orphan's: nobody holds its lock (a live
/// appender does, see the module doc), and the name still points to the record locked, checked
/// again right before the unlink. True if it was removed.
///
/// Something other than a regular file at a record's name (a FIFO, device, symlink or
/// directory another writer planted) cannot be locked, so the sweep leaves it: only the holder
/// of the file the name is for removes it ([`settle`]), so no two removers can race on it.
pub fn remove_if_unlocked(dir: &Dir, name: &OsStr) -> Result<bool> {
    match super::lock::try_lock(dir, name, Access::Lock) {
        Ok(Some(held)) => remove_held(dir, name, &held).map(|()| true),
        Ok(None) | Err(StorageError::NotRegular | StorageError::IsADirectory) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unlinks `name` in `dir`, which `held` (its record file, under our exclusive lock) was at
/// when locked: checked once more right before the unlink. While we hold the lock nobody else
/// removes the name (every remover holds the lock of what it removes) and nobody creates one
/// there (`O_EXCL` fails while the name exists), so the name is still `held` at the unlink.
fn remove_held(dir: &Dir, name: &OsStr, held: &super::lock::Held) -> Result<()> {
    match dir.stat(name) {
        Ok(now) if now.is(&held.meta) => match dir.remove_file(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::from_io(e)),
        },
        // Not the record we locked any more (only another writer of the volume could do
        // that): not ours to remove.
        _ => Ok(()),
    }
}

/// Clears a dead appender's record (or junk) at the record name for inode `ino`, as the
/// holder of the file's lock: under the record's own lock (waited for, bounded: a sweep may
/// hold it while it removes the same record), checked to be still at the name, durably with
/// `fsync`. Something that is not a regular file there cannot be locked; only the file's
/// holder removes such a thing (the sweep leaves it), so it is unlinked directly.
fn clear_stale(dir: &Dir, ino: u64, fsync: bool) -> Result<()> {
    let name = name_for(ino);
    let name = OsStr::new(&name);
    match super::lock::lock(dir, name, Access::Lock) {
        Ok(Some(held)) => remove_held(dir, name, &held)?,
        // Gone meanwhile (a sweep removed it): nothing to do.
        Ok(None) => return Ok(()),
        Err(StorageError::NotRegular | StorageError::IsADirectory) => match dir.remove_file(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::from_io(e)),
        },
        Err(e) => return Err(e),
    }
    if fsync {
        dir.sync().map_err(StorageError::from_io)?;
    }
    Ok(())
}

/// Under the exclusive lock of `file` (metadata `meta`) in `dir`: undoes the append of a dead
/// appender if a record names this file, and clears whatever else is at its record's name
/// (junk, or the record of an earlier file with the same inode number). Returns the size the
/// file was rolled back to, if it was.
pub fn settle(dir: &Dir, file: &File, meta: &Metadata, fsync: bool) -> Result<Option<u64>> {
    let cut = match read(dir, meta.ino())? {
        Found::Absent => return Ok(None),
        Found::Record(r) if r.file.matches(&FileId::of(file, meta)) => undo(file, meta.len(), &r)?,
        Found::Record(_) | Found::Junk => None,
    };
    clear_stale(dir, meta.ino(), fsync)?;
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn record(range: Range) -> Record {
        Record {
            id: "00ff".repeat(8),
            file: FileId {
                dev: 2049,
                ino: 12,
                born: Some(1_700_000_000_123_456_789),
            },
            before: 4096,
            range,
            boot: Some("d2b75c84-6863-4bcf-9d0f-ea24ae43582f".to_string()),
        }
    }

    fn text(r: &Record) -> String {
        String::from_utf8(r.encode()).unwrap()
    }

    #[test]
    fn records_round_trip_and_torn_ones_are_junk() {
        for range in [
            Range::Idle,
            Range::Batch {
                len: 300,
                sum: u64::MAX - 7,
            },
            Range::Poisoned { len: 5 },
            Range::Unsummed { len: 7 },
        ] {
            let r = record(range);
            let full = text(&r);
            assert_eq!(full.len(), SLOT_BYTES);
            assert_eq!(Record::decode(&full), Some(r.clone()));
            let end = full.find("\nend\n").unwrap() + 5;
            for cut in 0..end - 1 {
                assert_eq!(Record::decode(&full[..cut]), None, "cut at {cut}");
            }
        }
        let unborn = Record {
            file: FileId {
                born: None,
                ..record(Range::Idle).file
            },
            ..record(Range::Idle)
        };
        assert_eq!(Record::decode(&text(&unborn)), Some(unborn));
        let full = text(&record(Range::Idle));
        assert_eq!(Record::decode(&format!("{full}extra\n")), None);
        assert_eq!(
            Record::decode(&full.replace("before 4096", "before 4097")),
            None,
            "check line"
        );
    }

    #[test]
    fn a_rewrite_torn_between_two_records_is_junk() {
        let old = text(&record(Range::Batch { len: 10, sum: 1 }));
        let new = text(&Record {
            id: "11aa".repeat(8),
            before: 4106,
            ..record(Range::Idle)
        });
        for cut in 1..SLOT_BYTES {
            let torn = format!("{}{}", &new[..cut], &old[cut..]);
            if torn != new && torn != old {
                assert_eq!(Record::decode(&torn), None, "torn at {cut}");
            }
        }
    }

    #[test]
    fn older_records_still_roll_back() {
        let v2 = "http-nas append journal v2\nid ab\ndev 1\nino 12\nborn -\nbefore 6\nend\n";
        let r = Record::decode(v2).unwrap();
        assert_eq!((r.before, r.range), (6, Range::Legacy));
    }

    #[test]
    fn the_checksum_sees_every_byte_and_its_place() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = Checksum::of(&data);
        let mut pieces = Checksum::default();
        for part in data.chunks(13) {
            pieces.update(part);
        }
        assert_eq!(pieces.finish(), whole, "the same in any split");
        let mut flipped = data.clone();
        flipped[500] ^= 1;
        assert_ne!(Checksum::of(&flipped), whole);
        assert_ne!(Checksum::of(&data[..999]), whole);
        assert_ne!(Checksum::of(&[0u8; 16]), Checksum::of(&[0u8; 24]));
    }

    #[test]
    fn identity_tells_a_reused_inode_from_the_same_file() {
        let a = record(Range::Idle).file;
        let reused = FileId {
            born: Some(1_800_000_000_000_000_000),
            ..a.clone()
        };
        assert!(a.matches(&a));
        assert!(!a.matches(&reused));
        assert!(
            a.matches(&FileId {
                born: None,
                ..a.clone()
            }),
            "no birth time: inode decides"
        );
        assert!(!a.matches(&FileId { ino: 13, ..a.clone() }));
    }

    /// A fresh test directory `name` (and its handle) holding a file `f` of `whole\n`.
    fn dir_with_file(name: &str) -> (std::path::PathBuf, Dir, std::path::PathBuf) {
        let dir_path = crate::storage::test_dir(name);
        let dir = Dir::open(&dir_path).unwrap();
        let path = dir_path.join("f");
        std::fs::write(&path, b"whole\n").unwrap();
        (dir_path, dir, path)
    }

    /// Arms `slot` for `bytes` appended to `file`, writes them, and commits or drops.
    fn batch(dir: &Dir, file: &File, bytes: &[u8], commit: bool) {
        let meta = file.metadata().unwrap();
        let (mut slot, _) = Slot::take(dir, file, &meta).unwrap();
        let before = meta.len();
        let append = slot
            .begin(file, &meta, before, bytes.len() as u64, Some(Checksum::of(bytes)), true)
            .unwrap();
        file.write_all_at(bytes, before).unwrap();
        if commit {
            append.commit().unwrap();
        } else {
            drop(append);
        }
    }

    #[test]
    fn an_uncommitted_batch_rolls_back_and_a_committed_one_stays() {
        let (dir_path, dir, path) = dir_with_file("journal-guard");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let ino = file.metadata().unwrap().ino();
        batch(&dir, &file, b"dropped\n", false);
        batch(&dir, &file, b"more\n", true);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"whole\nmore\n",
            "only the committed batch stays"
        );
        let slot = std::fs::read(dir_path.join(name_for(ino))).unwrap();
        assert_eq!(slot.len(), SLOT_BYTES, "the slot stays, rewritten in place");
        let Found::Record(r) = read(&dir, ino).unwrap() else {
            panic!("no record")
        };
        assert!(r.is_idle(), "idle after the commit");
    }

    #[test]
    fn a_dead_batch_is_cut_in_this_boot_and_after_a_reboot_kept_only_if_whole() {
        let (_dir_path, dir, path) = dir_with_file("journal-dead-batch");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let cases = [
            (None, &b"batch\n"[..], &b"whole\n"[..]),
            (None, b"bat", b"whole\n"),
            (Some("another-boot"), b"batch\n", b"whole\nbatch\n"),
            (Some("another-boot"), b"bat", b"whole\n"),
            (Some("another-boot"), b"BATCH\n", b"whole\n"),
        ];
        for (boot, written, kept) in cases {
            let meta = file.metadata().unwrap();
            let (mut slot, _) = Slot::take(&dir, &file, &meta).unwrap();
            let mut armed = Record::new(
                FileId::of(&file, &meta),
                6,
                Range::Batch {
                    len: 6,
                    sum: Checksum::of(b"batch\n"),
                },
            )
            .unwrap();
            if let Some(boot) = boot {
                armed.boot = Some(boot.to_string());
            }
            slot.write(&armed).unwrap();
            file.write_all_at(written, 6).unwrap();
            // The writer dies here: nothing is committed or rolled back.
            slot.created = false;
            drop(slot);
            let what = format!("{boot:?} {:?}", String::from_utf8_lossy(written));
            let now = file.metadata().unwrap();
            assert_eq!(
                committed_len(&dir, &file, &now).unwrap(),
                kept.len() as u64,
                "readers, {what}"
            );
            let (_slot, _) = Slot::take(&dir, &file, &now).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), kept, "{what}");
            file.set_len(6).unwrap();
        }
    }

    #[test]
    fn without_the_lock_only_an_armed_record_tells_the_committed_length() {
        let (_dir_path, dir, path) = dir_with_file("journal-unlocked-len");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), None, "no record: unknown");
        let (mut slot, _) = Slot::take(&dir, &file, &meta).unwrap();
        let append = slot.begin(&file, &meta, 6, 12, None, false).unwrap();
        file.write_all_at(b"uncommitted\n", 6).unwrap();
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), Some(6));
        drop(append);
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), None, "idle: unknown");
    }

    #[test]
    fn only_a_record_nobody_holds_is_removed_as_an_orphan() {
        let (dir_path, dir, path) = dir_with_file("journal-orphan");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let name = name_for(meta.ino());
        let (live, _) = Slot::take(&dir, &file, &meta).unwrap();
        assert!(
            !remove_if_unlocked(&dir, OsStr::new(&name)).unwrap(),
            "a live append's record stays"
        );
        assert!(dir_path.join(&name).exists());
        drop(live);
        std::fs::write(dir_path.join(&name), "planted").unwrap();
        assert!(
            remove_if_unlocked(&dir, OsStr::new(&name)).unwrap(),
            "an unheld record goes"
        );
        assert!(!dir_path.join(&name).exists());
    }

    #[test]
    fn a_rollback_that_fails_poisons_the_record_for_the_next_holder() {
        let (dir_path, dir, path) = dir_with_file("journal-guard-stuck");
        // A read-only handle cannot truncate: the guard's rollback fails, as on a broken disk.
        let stuck = std::fs::File::open(&path).unwrap();
        let meta = stuck.metadata().unwrap();
        let (mut slot, _) = Slot::take(&dir, &stuck, &meta).unwrap();
        let append = slot
            .begin(&stuck, &meta, 6, 4, Some(Checksum::of(b"torn")), false)
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        drop(append);
        drop(slot);
        let Found::Record(r) = read(&dir, meta.ino()).unwrap() else {
            panic!("the record stays")
        };
        assert_eq!(r.range, Range::Poisoned { len: 4 }, "even a whole-looking range is cut");
        let writer = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let now = writer.metadata().unwrap();
        assert_eq!(committed_len(&dir, &writer, &now).unwrap(), 6);
        assert_eq!(
            settle(&dir, &writer, &now, false).unwrap(),
            Some(6),
            "the next holder rolls back"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"whole\n");
        assert!(!dir_path.join(name_for(meta.ino())).exists());
    }
}
