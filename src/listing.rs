//! A directory listing as a response body, rendered while it is sent: the plain form (one
//! name per line, as the original wrote it) or JSON (`[{"modified","name","size","type"}]`,
//! the keys in the order `serde_json` writes them). Entries are rendered a batch at a time
//! into a small buffer, so a listing of any size costs its names (kept by the storage listing
//! for sorting) and one buffer.

use crate::storage::{EntryKind, Listing};
use crate::time::rfc3339;
use serde_json::json;
use std::io::{self, Read};

/// Rendered bytes buffered at most before the writer takes them.
const BATCH_BYTES: usize = 32 * 1024;

/// Which form the listing takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Bare names, each followed by `\n`.
    Plain,
    /// One JSON array of objects.
    Json,
}

/// A [`Listing`] read as bytes of the chosen [`Form`].
pub struct ListingBody {
    listing: Listing,
    form: Form,
    buf: Vec<u8>,
    at: usize,
    started: bool,
    finished: bool,
}

impl ListingBody {
    /// The body for `listing` in `form`.
    pub fn new(listing: Listing, form: Form) -> Self {
        ListingBody {
            listing,
            form,
            buf: Vec::with_capacity(BATCH_BYTES + 1024),
            at: 0,
            started: false,
            finished: false,
        }
    }

    /// Renders the next entries into `buf` (emptied first), up to about [`BATCH_BYTES`].
    fn refill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.at = 0;
        if self.form == Form::Json && !self.started {
            self.buf.push(b'[');
        }
        while self.buf.len() < BATCH_BYTES {
            let wrote = match self.form {
                Form::Plain => match self.listing.next_name() {
                    Some(name) => {
                        let line = crate::storage::jail::listed_name(std::os::unix::ffi::OsStrExt::as_bytes(name));
                        self.buf.extend_from_slice(line.as_bytes());
                        self.buf.push(b'\n');
                        true
                    }
                    None => false,
                },
                Form::Json => match self.listing.next_entry() {
                    Some(e) => {
                        if self.started {
                            self.buf.push(b',');
                        }
                        let kind = match e.kind {
                            EntryKind::Directory => "directory",
                            EntryKind::File => "file",
                            EntryKind::Other => "other",
                        };
                        let item = json!({ "name": e.listed_name(), "type": kind, "size": e.size, "modified": rfc3339(e.modified) });
                        serde_json::to_writer(&mut self.buf, &item).map_err(io::Error::other)?;
                        true
                    }
                    None => false,
                },
            };
            if !wrote {
                if self.form == Form::Json {
                    self.buf.extend_from_slice(b"]\n");
                }
                self.finished = true;
                break;
            }
            self.started = true;
        }
        self.started = true;
        Ok(())
    }
}

impl Read for ListingBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.finished {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
