//! Date formatting for HTTP headers (IMF-fixdate, RFC 9110 §5.6.7), JSON listings (RFC 3339)
//! and `/check` (JavaScript's `Date.toJSON`, as Node's `fs.Stats` serialises), in UTC, without
//! a date crate: all need only the civil date of a Unix time.

use std::time::{SystemTime, UNIX_EPOCH};

const DAY_NAMES: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time broken into fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize,
}

/// Seconds since the Unix epoch, clamped to 0 for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn civil(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days.rem_euclid(7)) as usize,
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the form HTTP headers use.
pub fn http_date(t: SystemTime) -> String {
    let c = civil(unix_seconds(t));
    // Written field by field: two of these go out with every GET, and the formatting machinery
    // cost about 2% of a 4 KiB GET's CPU (perf, wrk -c16).
    let mut date = String::with_capacity(HTTP_DATE_LEN);
    date.push_str(DAY_NAMES[c.weekday]);
    date.push_str(", ");
    push_two_digits(&mut date, c.day);
    date.push(' ');
    date.push_str(MONTH_NAMES[(c.month - 1) as usize]);
    date.push(' ');
    if (1000..=9999).contains(&c.year) {
        push_two_digits(&mut date, (c.year / 100) as u32);
        push_two_digits(&mut date, (c.year % 100) as u32);
    } else {
        date.push_str(&c.year.to_string());
    }
    date.push(' ');
    push_two_digits(&mut date, c.hour);
    date.push(':');
    push_two_digits(&mut date, c.minute);
    date.push(':');
    push_two_digits(&mut date, c.second);
    date.push_str(" GMT");
    date
}

/// Length of an HTTP date with a four-digit year.
const HTTP_DATE_LEN: usize = 29;

/// Appends `n` (below 100) as two digits.
fn push_two_digits(out: &mut String, n: u32) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// `1994-11-06T08:49:37Z`, the form JSON listings use.
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(unix_seconds(t));
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Milliseconds since the epoch of a `(seconds, nanoseconds)` time, as Node computes
/// `atimeMs` and friends: `sec * 1e3 + nsec / 1e6`.
pub fn js_millis((secs, nanos): (i64, i64)) -> f64 {
    secs as f64 * 1e3 + nanos as f64 / 1e6
}

/// `1994-11-06T08:49:37.123Z` for a time in milliseconds: JavaScript's `Date.prototype.toJSON`
/// of `new Date(Math.round(ms))`, as Node's `fs.Stats` dates are made.
pub fn js_date(ms: f64) -> String {
    let mut date = String::with_capacity(JS_DATE_LEN);
    push_js_date(&mut date, (ms + 0.5).floor().max(0.0) as u64);
    date
}

/// Length of a [`js_date`] with a four-digit year.
const JS_DATE_LEN: usize = 24;

/// [`js_date`] of a whole number of milliseconds, appended to `out` field by field: every log
/// line starts with one, and `format!` cost about 3% of a 4 KiB GET's CPU.
pub fn push_js_date(out: &mut String, ms: u64) {
    let c = civil(ms / 1000);
    if (1000..=9999).contains(&c.year) {
        push_two_digits(out, (c.year / 100) as u32);
        push_two_digits(out, (c.year % 100) as u32);
    } else {
        out.push_str(&c.year.to_string());
    }
    out.push('-');
    push_two_digits(out, c.month);
    out.push('-');
    push_two_digits(out, c.day);
    out.push('T');
    push_two_digits(out, c.hour);
    out.push(':');
    push_two_digits(out, c.minute);
    out.push(':');
    push_two_digits(out, c.second);
    out.push('.');
    let millis = (ms % 1000) as u32;
    out.push(char::from(b'0' + (millis / 100) as u8));
    push_two_digits(out, millis % 100);
    out.push('Z');
}

/// A number as JavaScript's `JSON.stringify` writes it: no `.0` on whole numbers.
pub fn js_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn http_dates_match_the_imf_fixdate_format_field_for_field() {
        for secs in [
            0u64,
            1,
            59,
            784_111_777,
            951_782_400,
            1_795_564_800,
            253_402_300_799,
            253_402_300_800,
        ] {
            let c = civil(secs);
            let expected = format!(
                "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
                DAY_NAMES[c.weekday],
                c.day,
                MONTH_NAMES[(c.month - 1) as usize],
                c.year,
                c.hour,
                c.minute,
                c.second
            );
            assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(secs)), expected);
        }
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
    use super::*;
    use std::time::Duration;

    #[test]
    fn js_dates_written_field_by_field_match_the_formatted_form() {
        for ms in [
            0u64,
            1,
            999,
            1_000,
            784_111_777_123,
            951_782_400_050,
            1_796_568_419_832,
            253_402_300_799_999,
            253_402_300_800_000,
        ] {
            let c = civil(ms / 1000);
            let expected = format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                c.year,
                c.month,
                c.day,
                c.hour,
                c.minute,
                c.second,
                ms % 1000
            );
            assert_eq!(js_date(ms as f64), expected);
        }
        assert_eq!(js_date(784_111_777_123.0), "1994-11-06T08:49:37.123Z");
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn known_dates() {
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_564_800)), "2026-11-25T00:00:00Z");
        assert_eq!(js_millis((1_795_564_800, 123_456_000)), 1_795_564_800_123.456);
        assert_eq!(js_date(1_795_564_800_123.456), "2026-11-25T00:00:00.123Z");
        assert_eq!(
            js_date(1_795_564_800_123.5),
            "2026-11-25T00:00:00.124Z",
            "rounded, as Node does"
        );
        assert_eq!(js_date(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(js_number(1_700_000_000_000.0), "1700000000000");
        assert_eq!(js_number(1_795_564_800_123.456), "1795564800123.456");
    }
}
