//! The log sink: every record is one line on stderr, `2026-12-06T14:16:59.832Z INFO  [target]
//! message`, written with one `write(2)`.
//!
//! The access log writes a line per request, so its cost is paid on every small GET: one
//! formatting pass into a reused per-thread buffer and one system call (a logger that writes
//! the line and its newline separately makes two, and lines from two threads could interleave
//! between them). The format is the one operators' log pipelines already parse.

use std::cell::RefCell;
use std::time::SystemTime;

/// A line longer than this is still written whole; the buffer it grew is not kept.
const KEPT_LINE_BYTES: usize = 4096;

/// Writes records at `level` and above to stderr, one line each.
struct StderrLines {
    level: log::LevelFilter,
}

impl log::Log for StderrLines {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                // Logging from inside a log call (a Display impl that logs): write it plainly.
                let mut nested = format_line(SystemTime::now(), record);
                nested.push('\n');
                write_whole(nested.as_bytes());
                return;
            };
            line.clear();
            write_line(&mut line, SystemTime::now(), record);
            write_whole(line.as_bytes());
            if line.capacity() > KEPT_LINE_BYTES {
                *line = String::new();
            }
        });
    }

    fn flush(&self) {}
}

/// Longest line a pipe takes in one piece (`PIPE_BUF` on Linux): two writers' lines this
/// short never interleave, whatever else writes to the pipe.
const WHOLE_LINE_BYTES: usize = 4096;

/// Held shared while a line of at most [`WHOLE_LINE_BYTES`] is written and alone while a
/// longer one is (a pipe may take that in pieces), so no line is ever split by another line
/// of this process. Short lines take it without waiting on each other: std's stderr lock,
/// held across each `write(2)`, made workers queue on it and sleep (`futex`, about 900 a
/// second) under 256 connections of 4 KiB GETs logged to a file: 87.7k -> 91.1k requests/s
/// and 15.1 -> 14.6 µs of CPU each, medians of 4 alternating rounds.
static LONG_LINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Writes `line` to stderr (fd 2), whole, never split by another line of this process; errors
/// are dropped (a log line has nowhere else to go).
fn write_whole(line: &[u8]) {
    let write = || crate::sys::write_all_fd(libc::STDERR_FILENO, line);
    let _ = if line.len() <= WHOLE_LINE_BYTES {
        let _shared = LONG_LINE.read().unwrap_or_else(|p| p.into_inner());
        write()
    } else {
        let _alone = LONG_LINE.write().unwrap_or_else(|p| p.into_inner());
        write()
    };
}

/// Installs the sink for records at `level` and above; fails if a logger is already set.
pub fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    // Once per process: the logger lives as long as the program.
    log::set_logger(Box::leak(Box::new(StderrLines { level })))?;
    log::set_max_level(level);
    Ok(())
}

/// Appends the line for `record` at time `now` (newline included) to `out`.
fn write_line(out: &mut String, now: SystemTime, record: &log::Record<'_>) {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // Field by field: one line per request, and the formatting machinery was about 4% of a
    // 4 KiB GET's CPU.
    crate::time::push_js_date(out, ms);
    out.push(' ');
    let level = record.level().as_str();
    out.push_str(level);
    for _ in level.len()..LEVEL_WIDTH {
        out.push(' ');
    }
    out.push_str(" [");
    out.push_str(record.target());
    out.push_str("] ");
    match record.args().as_str() {
        Some(text) => out.push_str(text),
        None => {
            let _ = std::fmt::Write::write_fmt(out, *record.args());
        }
    }
    out.push('\n');
}

/// Width the level is padded to (`ERROR`, `INFO `).
const LEVEL_WIDTH: usize = 5;

/// The line for `record` at `now`, without its newline.
fn format_line(now: SystemTime, record: &log::Record<'_>) -> String {
    let mut out = String::new();
    write_line(&mut out, now, record);
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_is_the_time_the_padded_level_the_target_and_the_message() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_568_419_832);
        let args = format_args!("127.0.0.1:1 GET /file/ 200");
        let record = log::Record::builder()
            .level(log::Level::Info)
            .target("access")
            .args(args)
            .build();
        let mut out = String::new();
        write_line(&mut out, at, &record);
        assert_eq!(
            out,
            "2026-12-06T14:46:59.832Z INFO  [access] 127.0.0.1:1 GET /file/ 200\n"
        );
        let error = log::Record::builder()
            .level(log::Level::Error)
            .target("http_nas::server")
            .args(format_args!("x"))
            .build();
        assert_eq!(
            format_line(at, &error),
            "2026-12-06T14:46:59.832Z ERROR [http_nas::server] x"
        );
    }
}
