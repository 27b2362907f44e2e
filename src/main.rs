//! The `http-nas` binary: flags → logger → server → wait for SIGTERM/SIGINT → graceful stop.

use http_nas::Command;
use std::process::ExitCode;

/// Small blocks are kept per thread in front of the C library's allocator (`src/allocator.rs`):
/// musl's, in the shipped static binary, otherwise locks and maps memory on every request.
#[global_allocator]
static ALLOCATOR: http_nas::ThreadCache = http_nas::ThreadCache;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match http_nas::parse_args(&args, &|k| std::env::var(k).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", http_nas::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("http-nas {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("http-nas: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists, so every thread inherits the mask and only sigwait sees them.
    if let Err(e) = http_nas::block_stop_signals() {
        eprintln!("http-nas: cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = http_nas::init_logging(config.log_level) {
        eprintln!("http-nas: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    let server = match http_nas::start(&config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            // A setting at fault exits 2, as one refused while parsing does.
            return if e.is_misconfigured() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match http_nas::wait_for_stop_signal() {
        Ok(sig) => log::info!(
            "signal {sig} received: draining requests for up to {:?}",
            config.shutdown_timeout
        ),
        Err(e) => log::error!("waiting for signals failed: {e}; stopping"),
    }
    let report = server.shutdown(config.shutdown_timeout);
    if report.cut_off > 0 {
        log::warn!(
            "{} request(s) still running at the shutdown deadline were aborted",
            report.cut_off
        );
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}
