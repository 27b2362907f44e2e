//! Single byte ranges (`Range: bytes=…`, RFC 9110 §14): what part of a file to send.
//!
//! Only one range is served; a multi-range request gets the whole file (allowed by the RFC
//! and what a resuming `curl -C -` never sends anyway). Pure, so the table below covers it.

/// What to send for a `Range` header against a file of some size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeChoice {
    /// The whole file (no header, a header we ignore, or a multi-range request).
    Full,
    /// `len` bytes from `start` (206).
    Partial { start: u64, len: u64 },
    /// The range lies past the end of the file (416).
    Unsatisfiable,
}

/// Decides what a `Range` header value asks of a file of `size` bytes.
pub fn choose(header: Option<&str>, size: u64) -> RangeChoice {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeChoice::Full;
    };
    if spec.contains(',') {
        return RangeChoice::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeChoice::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        // Of nothing, or of an empty file, no byte can be sent (RFC 9110 §14.1.1).
        (true, _, Some(n)) => match n {
            0 => RangeChoice::Unsatisfiable,
            _ if size == 0 => RangeChoice::Unsatisfiable,
            n => RangeChoice::Partial {
                start: size - n.min(size),
                len: n.min(size),
            },
        },
        // bytes=A- : from A to the end.
        (false, Some(start), None) if last.trim().is_empty() => {
            if start >= size {
                RangeChoice::Unsatisfiable
            } else {
                RangeChoice::Partial {
                    start,
                    len: size - start,
                }
            }
        }
        // bytes=A-B
        (false, Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeChoice::Unsatisfiable
            } else {
                RangeChoice::Partial {
                    start,
                    len: end.min(size - 1) - start + 1,
                }
            }
        }
        // Syntactically invalid: ignore the header, as the RFC says.
        _ => RangeChoice::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeChoice::*;

    #[test]
    fn range_table() {
        let cases: &[(Option<&str>, u64, RangeChoice)] = &[
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Partial { start: 0, len: 5 }),
            (Some("bytes=5-"), 10, Partial { start: 5, len: 5 }),
            (Some("bytes=-3"), 10, Partial { start: 7, len: 3 }),
            (Some("bytes=-30"), 10, Partial { start: 0, len: 10 }),
            (Some("bytes=8-100"), 10, Partial { start: 8, len: 2 }),
            (Some("bytes=9-9"), 10, Partial { start: 9, len: 1 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=5-1"), 10, Full),
            (Some("bytes=a-b"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=+1-2"), 10, Full),
        ];
        for (header, size, want) in cases {
            assert_eq!(choose(*header, *size), *want, "{header:?} of {size}");
        }
    }
}
