//! Byte-string helpers shared by every module: reproducible incompressible test data, a base64
//! of the tests' own for checking digests, and a comparison and preview that never dump
//! megabytes into a failure message.

/// Deterministic incompressible bytes (xorshift64*), so a failure is reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts two byte strings are equal without dumping megabytes when they are not.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_diff = actual.iter().zip(expected).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, expected {}; first difference at {:?}\n got: {}\nwant: {}",
        actual.len(),
        expected.len(),
        first_diff.unwrap_or(actual.len().min(expected.len())),
        preview(actual),
        preview(expected)
    );
}

/// At most 300 bytes of `bytes`, escaped, with the total length if cut.
pub fn preview(bytes: &[u8]) -> String {
    const LIMIT: usize = 300;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    if bytes.len() > LIMIT {
        format!("{shown:?}... ({} bytes)", bytes.len())
    } else {
        format!("{shown:?}")
    }
}

/// Standard padded base64, as `base64` (coreutils) writes it: the tests' own, so a digest the
/// server answers is checked against an encoding it did not make.
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}
