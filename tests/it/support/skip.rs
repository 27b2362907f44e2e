//! Skipped tests, counted where people see them. A test that cannot run here (no chromium, no
//! GlusterFS volume, the kernel refuses a mount) calls [`skip`] and returns: the reason is printed
//! and, when `HTTP_NAS_SKIP_LOG` names a file, appended to it as `test<TAB>reason`, so that
//! `make test` can end with a count of what was skipped and why (cargo shows a skipped test as
//! `ok`), and `.ci/run` can fail on a skip it did not expect (`.ci/skips`).

use std::io::Write;

/// Says why the calling test does not run here and records it; the caller then returns.
pub fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
    let Some(log) = std::env::var_os("HTTP_NAS_SKIP_LOG").filter(|l| !l.is_empty()) else {
        return;
    };
    let test = std::thread::current().name().unwrap_or("unnamed").to_string();
    let line = format!("{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "could not record the skip in {}: {e}",
            std::path::Path::new(&log).display()
        );
    }
}
