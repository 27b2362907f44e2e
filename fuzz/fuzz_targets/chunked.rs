//! The production body reader on chunked input (and on a Content-Length): never panics, never
//! yields more data bytes than it was given, and gives the same outcome whether the input
//! arrives at once or one byte per read.
#![no_main]
use http_nas::entry::{Body, BodyError, Framing, ReadBuf};
use std::io::{self, Read, Write};

/// A client that sends `input` in reads of at most `step` bytes, then EOF.
struct Client<'a> {
    input: &'a [u8],
    step: usize,
}

impl Read for Client<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.step).min(self.input.len());
        out[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The data read (or the error kind), and the input bytes left unread.
fn read_all(input: &[u8], framing: Framing, step: usize) -> (Result<Vec<u8>, Option<BodyError>>, usize) {
    let mut pending = ReadBuf::with_bytes(b"");
    let mut client = Client { input, step };
    let mut body = Body::new(&mut client, &mut pending, framing, false, Some(1 << 16));
    let mut data = Vec::new();
    let result = body.read_to_end(&mut data).map(|_| data).map_err(|e| BodyError::of(&e));
    let complete = body.is_complete();
    assert_eq!(result.is_ok(), complete);
    (result, client.input.len() + pending.pending().len())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let framing = if selector & 1 == 0 {
        Framing::Chunked
    } else {
        Framing::Length(u64::from(selector >> 1) * 7)
    };
    let whole = read_all(input, framing, usize::MAX);
    if let Ok(body) = &whole.0 {
        assert!(body.len() + whole.1 <= input.len(), "more data than input");
    }
    let bytewise = read_all(input, framing, 1);
    assert_eq!(whole, bytewise, "split reads disagree");
});
