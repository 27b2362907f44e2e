//! The log sink: every record is one line on stderr, `2026-12-06T14:16:59.832Z INFO  [target]
//! message`, never split by another line.
//!
//! The access log writes a line per request, so its cost is paid on every small GET: one
//! formatting pass into a reused per-thread buffer, then a copy into the pending access lines
//! that a thread of their own writes in batches ([`batch`]: one `write(2)` for all the lines
//! of a millisecond). Other records are written at once. The format is the one operators' log
//! pipelines already parse.

mod batch;

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
                let mut nested = String::new();
                write_line(&mut nested, SystemTime::now(), record);
                batch::write_now(nested.as_bytes());
                return;
            };
            line.clear();
            write_line(&mut line, SystemTime::now(), record);
            if record.target() == ACCESS_TARGET {
                batch::append(line.as_bytes());
            } else {
                batch::write_now(line.as_bytes());
            }
            if line.capacity() > KEPT_LINE_BYTES {
                *line = String::new();
            }
        });
    }

    fn flush(&self) {}
}

/// The target of access lines (`log::info!(target: "access", ...)`), which are written in
/// batches ([`batch`]); every other record is written at once.
pub(crate) const ACCESS_TARGET: &str = "access";

/// Installs the sink for records at `level` and above and starts the thread that writes access
/// lines; fails if a logger is already set.
pub fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    // Once per process: the logger lives as long as the program.
    log::set_logger(Box::leak(Box::new(StderrLines { level })))?;
    log::set_max_level(level);
    if !batch::start() {
        log::warn!("could not start the log writer thread: access lines are written one by one");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The line for `record` at `now`, without its newline.
    fn format_line(now: SystemTime, record: &log::Record<'_>) -> String {
        let mut out = String::new();
        write_line(&mut out, now, record);
        out.pop();
        out
    }
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
