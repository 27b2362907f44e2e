//! The chunked transfer-coding decoder (RFC 9112 §7.1) as a state enum and one pure `step`.
//!
//! Only framing bytes (size lines, extensions, CRLFs, trailers) go through [`step`] one at a
//! time; chunk data is copied in bulk by the body reader while the state is
//! [`ChunkState::Data`]. Every way a peer can stretch the framing is bounded: at most
//! [`MAX_SIZE_HEX_DIGITS`] hex digits (so the size cannot overflow a `u64`), at most
//! [`MAX_EXTENSION_BYTES`] of extension per size line, at most [`MAX_TRAILER_BYTES`] of trailer
//! fields in all. Trailer fields are discarded unless the body reader keeps them for the handler
//! (`Body::keep_trailers`; [`trailer_field`] reads one). Its tests drive it through the body
//! reader that ships (`body.rs`), fed at every split of its input.

use std::fmt;

/// Most hex digits in one chunk size: 16 digits fill a `u64`, a 17th could overflow it.
pub const MAX_SIZE_HEX_DIGITS: u8 = 16;
/// Most bytes of chunk extensions (`;name=value`) accepted on one size line.
pub const MAX_EXTENSION_BYTES: usize = 1024;
/// Most bytes of trailer fields accepted after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Where the decoder is within the chunked framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkState {
    /// Reading the hex chunk size; `digits` seen so far.
    Size { value: u64, digits: u8 },
    /// Whitespace after the size, which only a `;` may follow (RFC 9112 §7.1.1's BWS).
    SizeSpace { value: u64, len: usize },
    /// Skipping a chunk extension after `;`.
    Extension { value: u64, len: usize },
    /// Saw the CR ending the size line; expecting LF.
    SizeLf { value: u64 },
    /// Inside chunk data with this many bytes left.
    Data { remaining: u64 },
    /// Chunk data ended; expecting CR.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final blank line); `total` trailer bytes so far.
    TrailerStart { total: usize },
    /// Inside a trailer field line's name (before its colon).
    TrailerName { total: usize },
    /// Inside a trailer field line, past its colon.
    TrailerLine { total: usize },
    /// Saw CR ending a trailer line; expecting LF.
    TrailerLf { total: usize },
    /// Saw the CR of the final blank line; expecting LF.
    FinalLf,
    /// The body is complete.
    Done,
}

impl ChunkState {
    /// The state at the start of a chunked body.
    pub const START: ChunkState = ChunkState::Size { value: 0, digits: 0 };

    /// The state after chunk data was copied, with `left` bytes of the chunk still to come.
    pub fn after_data(left: u64) -> ChunkState {
        if left == 0 {
            ChunkState::DataCr
        } else {
            ChunkState::Data { remaining: left }
        }
    }
}

/// Why the chunked framing was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line had no digits or a byte that is not a hex digit.
    BadSize,
    /// A size had more than [`MAX_SIZE_HEX_DIGITS`] digits.
    SizeTooLong,
    /// A size line's extensions exceeded [`MAX_EXTENSION_BYTES`].
    ExtensionTooLong,
    /// Chunk data was not followed by CRLF, or a line ended in a bare CR.
    MissingCrlf,
    /// Trailer fields exceeded [`MAX_TRAILER_BYTES`].
    TrailerTooLong,
    /// A trailer field line had whitespace in or after its name, before the colon (RFC 9112
    /// §5.1: refused with 400, as in a head), or was a folded continuation line.
    TrailerName,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BadSize => write!(f, "invalid chunk size line"),
            ChunkError::SizeTooLong => write!(f, "chunk size longer than {MAX_SIZE_HEX_DIGITS} hex digits"),
            ChunkError::ExtensionTooLong => write!(f, "chunk extension longer than {MAX_EXTENSION_BYTES} bytes"),
            ChunkError::MissingCrlf => write!(f, "chunk framing is missing a CRLF"),
            ChunkError::TrailerTooLong => write!(f, "chunk trailers longer than {MAX_TRAILER_BYTES} bytes"),
            ChunkError::TrailerName => write!(
                f,
                "a trailer field has whitespace before its colon (write `Name: value`, no space before the colon, no folded lines)"
            ),
        }
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'a'..=b'f' => Some(u64::from(byte - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(byte - b'A' + 10)),
        _ => None,
    }
}

/// Advances the decoder by one framing byte. Must not be called in `Data` (data is copied in
/// bulk) or `Done`.
pub fn step(state: ChunkState, byte: u8) -> Result<ChunkState, ChunkError> {
    use ChunkState::*;
    Ok(match state {
        Size { value, digits } => match (byte, hex_value(byte)) {
            (_, Some(d)) => {
                if digits >= MAX_SIZE_HEX_DIGITS {
                    return Err(ChunkError::SizeTooLong);
                }
                // Cannot overflow: at most 16 digits of 4 bits each.
                Size {
                    value: (value << 4) | d,
                    digits: digits + 1,
                }
            }
            (b';', None) if digits > 0 => Extension { value, len: 0 },
            (b' ' | b'\t', None) if digits > 0 => SizeSpace { value, len: 1 },
            (b'\r', None) if digits > 0 => SizeLf { value },
            _ => return Err(ChunkError::BadSize),
        },
        SizeSpace { value, len } => match byte {
            b';' => Extension { value, len: len + 1 },
            _ if len >= MAX_EXTENSION_BYTES => return Err(ChunkError::ExtensionTooLong),
            b' ' | b'\t' => SizeSpace { value, len: len + 1 },
            _ => return Err(ChunkError::BadSize),
        },
        Extension { value, len } => match byte {
            b'\r' => SizeLf { value },
            b'\n' => return Err(ChunkError::MissingCrlf),
            _ if len >= MAX_EXTENSION_BYTES => return Err(ChunkError::ExtensionTooLong),
            _ => Extension { value, len: len + 1 },
        },
        SizeLf { value } => match byte {
            b'\n' if value == 0 => TrailerStart { total: 0 },
            b'\n' => Data { remaining: value },
            _ => return Err(ChunkError::MissingCrlf),
        },
        DataCr => match byte {
            b'\r' => DataLf,
            _ => return Err(ChunkError::MissingCrlf),
        },
        DataLf => match byte {
            b'\n' => ChunkState::START,
            _ => return Err(ChunkError::MissingCrlf),
        },
        TrailerStart { total } => match byte {
            b'\r' => FinalLf,
            b'\n' => return Err(ChunkError::MissingCrlf),
            b' ' | b'\t' => return Err(ChunkError::TrailerName),
            _ => trailer_name_byte(total)?,
        },
        TrailerName { total } => match byte {
            b'\r' => TrailerLf { total },
            b'\n' => return Err(ChunkError::MissingCrlf),
            b' ' | b'\t' => return Err(ChunkError::TrailerName),
            b':' => trailer_byte(total)?,
            _ => trailer_name_byte(total)?,
        },
        TrailerLine { total } => match byte {
            b'\r' => TrailerLf { total },
            b'\n' => return Err(ChunkError::MissingCrlf),
            _ => trailer_byte(total)?,
        },
        TrailerLf { total } => match byte {
            b'\n' => TrailerStart { total },
            _ => return Err(ChunkError::MissingCrlf),
        },
        FinalLf => match byte {
            b'\n' => Done,
            _ => return Err(ChunkError::MissingCrlf),
        },
        // Data is consumed in bulk and Done consumes nothing; a byte here is a caller bug, and
        // treating it as bad framing is the safe answer.
        Data { .. } | Done => return Err(ChunkError::BadSize),
    })
}

fn trailer_name_byte(total: usize) -> Result<ChunkState, ChunkError> {
    if total >= MAX_TRAILER_BYTES {
        return Err(ChunkError::TrailerTooLong);
    }
    Ok(ChunkState::TrailerName { total: total + 1 })
}

fn trailer_byte(total: usize) -> Result<ChunkState, ChunkError> {
    if total >= MAX_TRAILER_BYTES {
        return Err(ChunkError::TrailerTooLong);
    }
    Ok(ChunkState::TrailerLine { total: total + 1 })
}

/// The value of the trailer field `name` (case-insensitive) in a raw trailer section (field
/// lines, each ended by CRLF), values of repeated lines joined by `, ` (RFC 9110 §5.3); `None`
/// if absent. Lines that are not `name: value` are skipped.
pub fn trailer_field(raw: &[u8], name: &str) -> Option<String> {
    let mut joined: Option<String> = None;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
        joined = Some(match joined {
            Some(before) => format!("{before}, {value}"),
            None => value,
        });
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_fields_are_found_by_name_and_joined() {
        let raw = b"Content-Digest: sha-256=:a:\r\nX: 1\r\ncontent-digest:crc32c=:b:\r\n\r";
        assert_eq!(
            trailer_field(raw, "content-digest").as_deref(),
            Some("sha-256=:a:, crc32c=:b:")
        );
        assert_eq!(trailer_field(raw, "x").as_deref(), Some("1"));
        assert_eq!(trailer_field(raw, "repr-digest"), None);
        assert_eq!(trailer_field(b"", "x"), None);
    }
}
