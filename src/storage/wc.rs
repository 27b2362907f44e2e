//! Line counting exactly like `wc -l`: the number of `\n` bytes, so an unterminated last line
//! is not counted.
//!
//! The file is read in [`WC_BUF_BYTES`] blocks and each block is counted with
//! [`count_newlines`], written so the compiler vectorises it: bytes are compared 64 at a time
//! into byte-wide lane counters that are summed before they can overflow (every 255 rounds).
//! The same loop is compiled twice, for baseline x86-64 (SSE2) and for AVX2, and the AVX2 copy
//! is chosen at run time when the CPU has it: measured on the 1 GiB CSV of `make bench`, 32
//! lanes with SSE2 ran at 0.25 s, 64 lanes with AVX2 at 0.10 s (`wc -l`: 0.12 s).

use std::io::{self, Read};

/// Read size for counting, in bytes: big enough that syscalls are a rounding error.
pub const WC_BUF_BYTES: usize = 256 * 1024;
/// Bytes compared per round: two AVX2 registers (four SSE2 ones), enough independent work to
/// keep the vector units busy.
const LANES: usize = 64;
/// Rounds before a byte-wide lane counter could overflow.
const ROUNDS_PER_FLUSH: usize = 255;

/// Counts `\n` bytes in `buf`, with AVX2 when the CPU has it (checked once, then cached).
pub fn count_newlines(buf: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the only requirement of an AVX2 function is a CPU with AVX2, checked above.
        #[allow(unsafe_code)]
        return unsafe { count_newlines_avx2(buf) };
    }
    count_newlines_portable(buf)
}

/// The same loop compiled for AVX2: 32-byte compares instead of SSE2's 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_newlines_avx2(buf: &[u8]) -> u64 {
    count_newlines_portable(buf)
}

/// The counting loop, written so the compiler vectorises it for whatever features it may use.
#[inline(always)]
fn count_newlines_portable(buf: &[u8]) -> u64 {
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
