//! Line counting exactly like `wc -l`: the number of `\n` bytes, so an unterminated last line
//! is not counted.
//!
//! The file is read in [`WC_BUF_BYTES`] blocks and each block is counted with
//! [`count_newlines`], written so the compiler vectorises it: bytes are compared 32 at a time
//! into byte-wide lane counters that are summed before they can overflow (every 255 rounds).

use std::io::{self, Read};

/// Read size for counting, in bytes: big enough that syscalls are a rounding error.
pub const WC_BUF_BYTES: usize = 256 * 1024;
/// Bytes compared per round (one AVX2 register, two SSE2 ones).
const LANES: usize = 32;
/// Rounds before a byte-wide lane counter could overflow.
const ROUNDS_PER_FLUSH: usize = 255;

/// Counts `\n` bytes in `buf`.
pub fn count_newlines(buf: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut blocks = buf.chunks_exact(LANES * ROUNDS_PER_FLUSH);
    for block in &mut blocks {
        let mut lanes = [0u8; LANES];
        for round in block.chunks_exact(LANES) {
            for (lane, &byte) in lanes.iter_mut().zip(round) {
                *lane += u8::from(byte == b'\n');
            }
        }
        total += lanes.iter().map(|&n| u64::from(n)).sum::<u64>();
    }
    total + blocks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

/// Counts `\n` bytes in everything `src` yields.
pub fn count_lines(mut src: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; WC_BUF_BYTES];
    let mut total = 0;
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += count_newlines(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &[u8]) -> u64 {
        buf.iter().filter(|&&b| b == b'\n').count() as u64
    }

    #[test]
    fn matches_naive_count_on_many_shapes() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in [0, 1, 31, 32, 33, 8159, 8160, 8161, 100_000] {
            for density in [0u64, 1, 7, 255] {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if density > 0 && seed % 256 < density {
                            b'\n'
                        } else {
                            (seed >> 8) as u8 | 0x80
                        }
                    })
                    .collect();
                assert_eq!(count_newlines(&buf), naive(&buf), "len {len} density {density}");
            }
        }
    }

    #[test]
    fn all_newlines_do_not_overflow_lanes() {
        let buf = vec![b'\n'; LANES * ROUNDS_PER_FLUSH * 3 + 5];
        assert_eq!(count_newlines(&buf), buf.len() as u64);
    }

    #[test]
    fn like_wc_l() {
        assert_eq!(count_lines(&b"a\nb\nc\n"[..]).unwrap(), 3);
        assert_eq!(count_lines(&b"a\nb"[..]).unwrap(), 1);
        assert_eq!(count_lines(&b""[..]).unwrap(), 0);
    }
}
