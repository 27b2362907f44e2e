#!/usr/bin/env python3
"""Benchmark harness for http-nas: throughput and memory against cat, wc -l, Python and nginx.

Run by `make bench` (after `cargo build --release`). It generates its data once (cached in
`bench-data/`, git-ignored), starts http-nas (and nginx, when available) as child processes on
127.0.0.1, measures every benchmark in alternating A/B order, takes the median of BENCH_RUNS runs,
prints a table to stdout and writes the same table to benches/RESULTS.md.

Benchmarks:
  1. GET of a 1 GiB file to /dev/null with curl, vs `cat file > /dev/null` and vs nginx.
  2. chunked POST of 1 GiB from a pipe (`cat | curl -T -`), vs nginx DAV PUT the same way;
     http-nas with --fsync false (the comparison) and --fsync true (reported).
  3. POST of 1 GiB with Content-Length (`curl -T file`), vs nginx DAV PUT the same way.
  4. appends/s of 100-byte PUT bodies over one keep-alive connection (Python http.client),
     fsync on and off, vs a Python `open(..., 'ab')` write+flush (+ os.fsync) loop.
  4b. the append matrix: 100 B and 256 KiB bodies, fsync on and off, 1 client to 1 file, 8 to 1
     file and 8 to 8 files (one process per client, keep-alive), vs the same shapes of Python
     processes appending to local files (write, + fsync). With BENCH_COMPARE_BINARY, the same
     matrix for that build too (a previous protocol, for before/after in one run); 256 KiB
     appends also against POSTs of the same bytes from the same clients.
  4c. appends (100 B and 256 KiB, 1 and 8 clients to 1 file, fsync on) with a verified sha-256
     Content-Digest against the same appends without one; section 3 likewise has a POST row
     with a sha-256 Content-Digest (crc32c is computed on every write either way).
  5. GET /file/NAME/wc of a 1 GiB CSV vs `wc -l`, page cache warm.
  6. requests/s of a 4 KiB file with keep-alive: `wrk -t2 -c16 -d4s` and `-c256` vs nginx
     (target: at least nginx's); and system calls per kept-alive GET of it (strace -c -f over
     200 GETs on one connection, the file at the top and four directories deep) vs nginx.
  7. memory: idle VmRSS, and peak VmHWM with 16 concurrent 64 MiB uploads and with 16 concurrent
     1 GiB downloads, each phase on a fresh server.
  8. 128 and 256 concurrent streams (half 16 MiB uploads, half downloads) on a fresh server
     with default flags: aggregate MiB/s (vs nginx), peak VmHWM, /healthz latency p50/p99; and
     the peak VmHWM with that many slow clients (curl --limit-rate 1M, 4 MiB each) all in
     flight at once, the memory worst case the chart's limit must hold.
  9. a directory of 100,000 files: GET as text and as JSON (vs `ls -f | sort`), peak VmHWM.

Environment: BENCH_RUNS (runs per benchmark, default 3), BENCH_DATA (data and scratch
directory, default <repo>/bench-data), BENCH_COMPARE_BINARY (another http-nas build measured
beside this one in the append matrix), BENCH_ONLY (comma-separated section numbers to run, e.g.
`4b`; default all).
nginx and wrk are found on PATH or in /usr/sbin, /usr/local/sbin, /sbin; this script installs
nothing. benches/install-tools (run by `make bench` first; BENCH_INSTALL=0 there skips it)
apt-get installs the missing ones; without them their rows say "skipped: ... not installed".
Only the Python 3.11 standard library is used; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Constants (sizes in bytes, times in seconds)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped binary (static musl) by default; BENCH_BINARY picks another build.
SERVER_BIN = Path(
    os.environ.get("BENCH_BINARY", REPO_ROOT / "target" / "x86_64-unknown-linux-musl" / "release" / "http-nas")
)
RESULTS_PATH = REPO_ROOT / "benches" / "RESULTS.md"
DEFAULT_DATA_DIR = REPO_ROOT / "bench-data"
HOST = "127.0.0.1"

DEFAULT_RUNS = 3
WARMUP_ROUNDS = 1  # uncounted rounds before the measured ones (first uploads are often slow)
BIG_FILE_BYTES = 1 * GIB
SMALL_FILE_BYTES = 4 * KIB
MEM_UPLOAD_BYTES = 64 * MIB
RANDOM_CHUNK_BYTES = 8 * MIB
RANDOM_SEED = 20240601
CSV_BLOCK_LINES = 20_000  # one distinct block (~1.6 MiB), repeated up to the file size
CSV_MIN_LINE_BYTES = 60
CSV_MAX_LINE_BYTES = 100

APPEND_COUNT = 2000
APPEND_BODY_BYTES = 100
APPEND_MAX_SECONDS = 20.0
MATRIX_SECONDS = 2.0  # each cell of the append matrix runs this long
MATRIX_BODIES = [100, 256 * KIB]
MATRIX_SHAPES = [(1, 1), (8, 1), (8, 8)]  # (clients, files)
COMPARE_BIN = os.environ.get("BENCH_COMPARE_BINARY")

WRK_THREADS = 2
WRK_CONNECTIONS = [16, 256]
WRK_SECONDS = 4
TARGET_WRK_VS_NGINX = 1.0
SYSCALL_GETS = 200  # kept-alive GETs counted by strace -c per server and path
DEEP_DIR = "a/b/c/d"  # where the 4-directories-deep copy of the small file goes

MEM_CONCURRENCY = 16
NGINX_WORKERS = "auto"  # as Debian configures nginx
SERVER_SHUTDOWN_SECONDS = 2  # --shutdown-timeout given to http-nas

STREAM_TIMEOUT = 300.0  # one 1 GiB transfer (or 16 in parallel)
SHORT_TIMEOUT = 30.0
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 30.0

TARGET_GET_VS_NGINX = 0.9
TARGET_POST_VS_NGINX = 0.9
TARGET_WC_VS_WCL = 0.8
TARGET_PEAK_RSS_MIB = 16
TARGET_IDLE_RSS_MIB = 2
# The chart's memory limit (96 MiB) must hold the worst case at the default workers.
TARGET_STREAMS_RSS_MIB = 96
TARGET_PROBE_P99_MS = 100
STREAM_COUNTS = [128, 256]
STREAM_BYTES = 16 * MIB
STREAM_FILE_NAME = "stream-16m.bin"
# Slow clients: every stream in flight at once, each holding its worker (and buffers).
HELD_BYTES = 4 * MIB
HELD_RATE = "1M"
HELD_FILE_NAME = "held-4m.bin"
LISTING_ENTRIES = 100_000

CURL = ["curl", "-s", "-S", "-f", "--noproxy", "*"]
TOOLS = ["nginx", "wrk"]  # installed by benches/install-tools (Debian: nginx-light, wrk)

# Names of the data files (in the data dir, and linked into every server's root).
RANDOM_NAME = "random-1g.bin"
CSV_NAME = "lines-1g.csv"
SMALL_NAME = "small-4k.bin"
MEM_UPLOAD_NAME = "random-64m.bin"


class BenchError(Exception):
    """A benchmark step failed (bad exit code, wrong size, server did not start, ...)."""


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries the result table."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Row:
    """One line of the result table: http-nas runs vs baseline runs, with an optional target."""

    benchmark: str
    unit: str
    nas: list[float] = dataclasses.field(default_factory=list)
    base: list[float] = dataclasses.field(default_factory=list)
    base_name: str = ""
    min_ratio: float | None = None  # target: median(nas) / median(base) >= this
    max_value: float | None = None  # target: http-nas value <= this (in `unit`)
    note: str = ""  # why something is missing (skip or error)
    aggregate: str = "median"  # how the runs are summarised: "median" or "max"
    details: list[str] = dataclasses.field(default_factory=list)

    def summary(self, values: list[float]) -> float | None:
        if not values:
            return None
        return max(values) if self.aggregate == "max" else statistics.median(values)

    @property
    def nas_value(self) -> float | None:
        return self.summary(self.nas)

    @property
    def base_value(self) -> float | None:
        return self.summary(self.base)

    @property
    def ratio(self) -> float | None:
        if self.nas_value is None or not self.base_value:
            return None
        return self.nas_value / self.base_value

    @property
    def met(self) -> bool | None:
        if self.min_ratio is not None and self.ratio is not None:
            return self.ratio >= self.min_ratio
        if self.max_value is not None and self.nas_value is not None:
            return self.nas_value <= self.max_value
        return None


def fmt_number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def cells(row: Row) -> list[str]:
    """The five table cells of a row."""
    nas = f"{fmt_number(row.nas_value)} {row.unit}" if row.nas_value is not None else row.note
    if row.base_name and row.base_value is not None:
        base = f"{fmt_number(row.base_value)} {row.unit} ({row.base_name})"
    elif row.base_name:
        base = row.note or "n/a"
    else:
        base = "-"
    ratio = f"{row.ratio:.2f}x {row.base_name}" if row.ratio is not None else "-"
    if row.min_ratio is not None:
        target = f">= {row.min_ratio}x {row.base_name}"
    elif row.max_value is not None:
        target = f"<= {row.max_value:g} {row.unit}"
    else:
        target = "-"
    if row.met is not None:
        target += " ok" if row.met else " MISSED"
    return [row.benchmark, nas, base, ratio, target]


HEADERS = ["benchmark", "http-nas", "baseline", "ratio (http-nas/baseline)", "target"]


def render_table(rows: list[Row]) -> str:
    """A markdown table, padded so it also reads well on a terminal."""
    table = [HEADERS] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(table[0]), separator] + [line(v) for v in table[1:]])


def render_details(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        parts = []
        if row.nas:
            parts.append("http-nas " + ", ".join(fmt_number(v) for v in row.nas))
        if row.base:
            parts.append(f"{row.base_name} " + ", ".join(fmt_number(v) for v in row.base))
        parts += row.details
        if parts:
            lines.append(f"- {row.benchmark} ({row.unit}, {row.aggregate}): " + "; ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Machine description


def command_output(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=SHORT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def git_commit() -> str:
    commit = command_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT) or "unknown"
    dirty = command_output(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           cwd=REPO_ROOT)
    return commit + (" (src modified)" if dirty else "")


def machine_line(runs: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    uname = command_output(["uname", "-srm"]) or "unknown OS"
    return (f"{now} | {uname} | {cpu_model()} | {os.cpu_count()} cores | commit {git_commit()}"
            f" | median of {runs} runs")


# ---------------------------------------------------------------------------------------------
# Data generation (cached in the data dir, regenerated when missing or of the wrong size)


def write_atomically(path: Path, size: int, write: Callable[[object, int], None]) -> None:
    if path.is_file() and path.stat().st_size == size:
        return
    log(f"generating {path} ({size / MIB:.0f} MiB)")
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as out:
        write(out, size)
    if tmp.stat().st_size != size:
        raise BenchError(f"generated {tmp} has the wrong size")
    tmp.replace(path)


def write_random(out, size: int) -> None:
    rng = random.Random(RANDOM_SEED)
    remaining = size
    while remaining > 0:
        n = min(RANDOM_CHUNK_BYTES, remaining)
        out.write(rng.randbytes(n))
        remaining -= n


METRICS = ["cpu_usage", "mem_rss", "disk_io", "net_rx", "net_tx", "latency_ms", "requests"]
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def csv_line(rng: random.Random, index: int) -> bytes:
    """One CSV-like line of CSV_MIN_LINE_BYTES..CSV_MAX_LINE_BYTES bytes, '\\n' included."""
    head = (f"{index},{1_700_000_000 + rng.randrange(10_000_000)},node-{rng.randrange(1000):03d},"
            f"{rng.choice(METRICS)},{rng.uniform(0, 1e6):.3f},")
    length = rng.randint(CSV_MIN_LINE_BYTES, CSV_MAX_LINE_BYTES)
    pad = max(1, length - len(head) - 1)
    return (head + "".join(rng.choices(ALNUM, k=pad)) + "\n").encode()


def write_csv(out, size: int) -> None:
    rng = random.Random(RANDOM_SEED)
    block = b"".join(csv_line(rng, i) for i in range(CSV_BLOCK_LINES))
    remaining = size
    while remaining > len(block):
        out.write(block)
        remaining -= len(block)
    out.write(block[: remaining - 1] + b"\n")  # exact size, ends with a newline


@dataclasses.dataclass
class Data:
    dir: Path
    random: Path
    csv: Path
    small: Path
    mem_upload: Path

    def all(self) -> list[Path]:
        return [self.random, self.csv, self.small, self.mem_upload]


def ensure_data(data_dir: Path) -> Data:
    data_dir.mkdir(parents=True, exist_ok=True)
    data = Data(data_dir, data_dir / RANDOM_NAME, data_dir / CSV_NAME, data_dir / SMALL_NAME,
                data_dir / MEM_UPLOAD_NAME)
    write_atomically(data.random, BIG_FILE_BYTES, write_random)
    write_atomically(data.csv, BIG_FILE_BYTES, write_csv)
    write_atomically(data.small, SMALL_FILE_BYTES, write_random)
    write_atomically(data.mem_upload, MEM_UPLOAD_BYTES, write_random)
    return data


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def make_root(path: Path, data: Data) -> Path:
    """A server root holding hard links to the big data files, so both servers share the page
    cache, and a copy of the small one: a file the service stored has one link, and http-nas
    remembers only such a file as clean between reads (a file with several names takes the
    locked read every time, docs/write-protocol.md)."""
    path.mkdir(parents=True)
    for file in data.all():
        if file == data.small:
            shutil.copyfile(file, path / file.name)
        else:
            link_or_copy(file, path / file.name)
    return path


# ---------------------------------------------------------------------------------------------
# Child processes


class Children:
    """Every long-running process the harness started, so that `finally` can stop them all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as e:
                log(f"could not stop pid {proc.pid}: {e}")


CHILDREN = Children()


@dataclasses.dataclass
class Server:
    """A running HTTP server: http-nas (files under /file/) or nginx (files under /)."""

    name: str
    proc: subprocess.Popen
    port: int
    root: Path
    url_prefix: str

    def url(self, file_name: str) -> str:
        return f"http://{HOST}:{self.port}{self.url_prefix}{file_name}"

    def path(self, file_name: str) -> Path:
        return self.root / file_name


def tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


LISTENING_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def wait_for_listening_line(proc: subprocess.Popen, log_path: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING_RE.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            raise BenchError(f"http-nas exited with {proc.returncode}:\n{tail(log_path)}")
        time.sleep(0.02)
    raise BenchError(f"http-nas did not log 'listening on' within {START_TIMEOUT} s")


def start_http_nas(work: Path, name: str, data: Data, fsync: bool | None,
                   binary: Path = SERVER_BIN) -> Server:
    """A fresh http-nas on a free port; fsync None keeps the server's default (true)."""
    root = make_root(work / f"{name}-root", data)
    log_path = work / f"{name}.log"
    args = [str(binary), "--listen", f"{HOST}:0", "--storage", str(root),
            "--shutdown-timeout", str(SERVER_SHUTDOWN_SECONDS)]
    if fsync is not None:
        args += ["--fsync", "true" if fsync else "false"]
    with open(log_path, "wb") as stderr:
        proc = CHILDREN.spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=stderr)
    port = wait_for_listening_line(proc, log_path)
    return Server(name, proc, port, root, "/file/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, error_log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"nginx exited with {proc.returncode}:\n{tail(error_log)}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nginx did not accept connections within {START_TIMEOUT} s")


NGINX_CONF = """\
{user_line}
daemon off;
master_process on;
worker_processes {workers};
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 768; }}
http {{
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
    }}
}}
"""


def start_nginx(work: Path, data: Data, nginx: str) -> Server:
    conf_dir = work / "nginx"
    conf_dir.mkdir()
    root = make_root(work / "nginx-root", data)
    port = free_port()
    user_line = "user root;" if os.geteuid() == 0 else ""
    conf = conf_dir / "nginx.conf"
    access_log = "off" if os.environ.get("BENCH_NGINX_ACCESS_LOG") == "off" else str(conf_dir / "access.log")
    conf.write_text(NGINX_CONF.format(user_line=user_line, workers=NGINX_WORKERS, dir=conf_dir,
                                      host=HOST, port=port, root=root, access_log=access_log))
    error_log = conf_dir / "error.log"
    with open(error_log, "ab") as stderr:
        proc = CHILDREN.spawn([nginx, "-p", str(conf_dir), "-c", str(conf), "-e", str(error_log)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    wait_for_port(proc, port, error_log)
    return Server("nginx", proc, port, root, "/")


# ---------------------------------------------------------------------------------------------
# Tools (nginx, wrk): found on PATH or in sbin; benches/install-tools installs them


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_tools() -> dict[str, str | None]:
    """Paths of nginx and wrk, None for a missing one (its rows are skipped)."""
    return {tool: find_tool(tool) for tool in TOOLS}


def skip_reason(tool: str) -> str:
    return f"skipped: {tool} not installed (run benches/install-tools)"


# ---------------------------------------------------------------------------------------------
# Measuring


def run_checked(args: list[str], timeout: float,
                stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess:
    """Runs a command to completion; stdout is captured unless redirected (e.g. to DEVNULL)."""
    done = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return done


def timed(args: list[str], timeout: float = STREAM_TIMEOUT,
          stdout: int = subprocess.PIPE) -> tuple[float, str]:
    """Wall-clock seconds of one command, and its stdout (if captured)."""
    start = time.perf_counter()
    done = run_checked(args, timeout, stdout)
    return time.perf_counter() - start, done.stdout or ""


def timed_pipe(producer: list[str], consumer: list[str],
               timeout: float = STREAM_TIMEOUT) -> float:
    """Wall-clock seconds of `producer | consumer`; both must succeed."""
    start = time.perf_counter()
    procs = [subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen(consumer, stdin=procs[0].stdout, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
        procs[0].stdout.close()
        first, second = procs
        _, err = second.communicate(timeout=timeout)
        first.wait(timeout=SHORT_TIMEOUT)
    finally:
        for proc in procs:  # on timeout or interruption
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.perf_counter() - start
    if first.returncode != 0 or second.returncode != 0:
        raise BenchError(f"{' '.join(producer)} | {' '.join(consumer)} exited with "
                         f"{first.returncode}/{second.returncode}: {err.decode(errors='replace')}")
    return elapsed


def mib_per_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


def alternate(runs: int, variants: dict[str, Callable[[], float]],
              warmup: int = WARMUP_ROUNDS) -> dict[str, list[float]]:
    """Runs every variant once per round, round after round (A B A B ...).

    The first `warmup` rounds are run the same way but not counted.
    """
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(warmup + runs):
        counted = round_index >= warmup
        label = f"run {round_index - warmup + 1}/{runs}" if counted else "warm-up"
        for name, measure in variants.items():
            value = measure()
            if counted:
                results[name].append(value)
            log(f"  {name:28} {label:9}: {fmt_number(value)}")
    return results


def proc_status_mib(pid: int) -> dict[str, float]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, RssAnon, ...), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * KIB / MIB
    return fields


def warm_cache(paths: list[Path]) -> None:
    for path in paths:
        run_checked(["cat", str(path)], STREAM_TIMEOUT, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Benchmarks


@dataclasses.dataclass
class Context:
    runs: int
    work: Path
    data: Data
    nas: Server  # --fsync false
    nas_fsync: Server  # --fsync true
    nginx: Server | None
    nginx_note: str
    wrk: str | None
    wrk_note: str


def curl_get(url: str, size: int) -> float:
    seconds, out = timed(CURL + ["-o", "/dev/null", "-w", "%{size_download}", url])
    if int(float(out or 0)) != size:
        raise BenchError(f"GET {url} gave {out} bytes, expected {size}")
    return mib_per_s(size, seconds)


def cat_to_devnull(path: Path) -> float:
    seconds, _ = timed(["cat", str(path)], stdout=subprocess.DEVNULL)
    return mib_per_s(path.stat().st_size, seconds)


def bench_get(ctx: Context) -> list[Row]:
    log("1. GET 1 GiB to /dev/null")
    size = ctx.data.random.stat().st_size
    variants = {
        "http-nas GET": lambda: curl_get(ctx.nas.url(RANDOM_NAME), size),
        "cat > /dev/null": lambda: cat_to_devnull(ctx.data.random),
    }
    if ctx.nginx:
        variants["nginx GET"] = lambda: curl_get(ctx.nginx.url(RANDOM_NAME), size)
    results = alternate(ctx.runs, variants)
    nas = results["http-nas GET"]
    name = "GET 1 GiB -> /dev/null (curl)"
    return [
        Row(name, "MiB/s", nas, results["cat > /dev/null"], "cat > /dev/null"),
        Row(name, "MiB/s", nas, results.get("nginx GET", []), "nginx",
            min_ratio=TARGET_GET_VS_NGINX, note="" if ctx.nginx else ctx.nginx_note),
    ]


def upload(server: Server, source: Path, chunked: bool, headers: tuple[str, ...] = ()) -> float:
    """POSTs (http-nas) or PUTs (nginx) `source`, with extra `headers`; returns MiB/s. The
    upload is removed after."""
    size = source.stat().st_size
    target = f"upload-{server.name}.bin"
    method = "PUT" if server.name == "nginx" else "POST"
    os.sync()  # start every run with no dirty pages from earlier runs
    if chunked:
        consumer = CURL + ["-o", "/dev/null", "-X", method, "-H", "Transfer-Encoding: chunked",
                           *[arg for h in headers for arg in ("-H", h)], "-T", "-", server.url(target)]
        seconds = timed_pipe(["cat", str(source)], consumer)
    else:
        seconds, _ = timed(CURL + ["-o", "/dev/null", "-X", method,
                                   *[arg for h in headers for arg in ("-H", h)], "-T", str(source),
                                   server.url(target)])
    stored = server.path(target)
    stored_size = stored.stat().st_size if stored.exists() else -1
    stored.unlink(missing_ok=True)  # dropped before writeback, so runs do not slow each other
    if stored_size != size:
        raise BenchError(f"{method} to {server.name} stored {stored_size} bytes, expected {size}")
    return mib_per_s(size, seconds)


def bench_chunked_post(ctx: Context) -> list[Row]:
    log("2. chunked POST of 1 GiB from a pipe")
    source = ctx.data.random
    variants = {
        "http-nas POST fsync=false": lambda: upload(ctx.nas, source, chunked=True),
        "http-nas POST fsync=true": lambda: upload(ctx.nas_fsync, source, chunked=True),
    }
    if ctx.nginx:
        variants["nginx PUT"] = lambda: upload(ctx.nginx, source, chunked=True)
    results = alternate(ctx.runs, variants)
    nginx_runs = results.get("nginx PUT", [])
    note = "" if ctx.nginx else ctx.nginx_note
    return [
        Row("POST 1 GiB chunked from pipe, fsync off", "MiB/s",
            results["http-nas POST fsync=false"], nginx_runs, "nginx PUT",
            min_ratio=TARGET_POST_VS_NGINX, note=note),
        Row("POST 1 GiB chunked from pipe, fsync on", "MiB/s",
            results["http-nas POST fsync=true"], nginx_runs, "nginx PUT (no fsync)", note=note),
    ]


def bench_content_length_post(ctx: Context) -> list[Row]:
    log("3. POST of 1 GiB with Content-Length")
    source = ctx.data.random
    claim = (f"Content-Digest: sha-256=:{sha256_base64(source)}:",)
    variants = {
        "http-nas POST fsync=false": lambda: upload(ctx.nas, source, chunked=False),
        "http-nas POST sha-256": lambda: upload(ctx.nas, source, chunked=False, headers=claim),
    }
    if ctx.nginx:
        variants["nginx PUT"] = lambda: upload(ctx.nginx, source, chunked=False)
    results = alternate(ctx.runs, variants)
    return [
        Row("POST 1 GiB Content-Length, fsync off", "MiB/s",
            results["http-nas POST fsync=false"], results.get("nginx PUT", []), "nginx PUT",
            note="" if ctx.nginx else ctx.nginx_note),
        # crc32c is computed and kept on every write; the sha-256 only when a client sends or
        # asks for it: its cost, against the same POST without it in the same run.
        Row("POST 1 GiB Content-Length, fsync off, Content-Digest sha-256 verified", "MiB/s",
            results["http-nas POST sha-256"], results["http-nas POST fsync=false"],
            "same POST without a digest"),
    ]


def sha256_base64(path: Path) -> str:
    """The sha-256 of the file at `path`, base64, as a Content-Digest carries it."""
    import base64
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


APPEND_BODY = b"x" * (APPEND_BODY_BYTES - 1) + b"\n"


def request_loop(server: Server, method: str, path: str, body: bytes | None) -> tuple[int, float]:
    """APPEND_COUNT requests on one keep-alive connection (bounded by time too): count, seconds."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=HTTP_TIMEOUT)
    headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
    done = 0
    start = time.perf_counter()
    try:
        while done < APPEND_COUNT and time.perf_counter() - start < APPEND_MAX_SECONDS:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise BenchError(f"{method} {path} answered {response.status}")
            done += 1
        return done, time.perf_counter() - start
    finally:
        conn.close()


def client_ceiling(server: Server) -> float:
    """Requests/s of GET /healthz with the same client loop: the most any append row can show."""
    done, elapsed = request_loop(server, "GET", "/healthz", None)
    return done / elapsed


def appends_over_http(server: Server, name: str) -> float:
    """Appends/s of APPEND_BODY PUTs on one keep-alive connection; checks the file's size."""
    done, elapsed = request_loop(server, "PUT", server.url_prefix + name, APPEND_BODY)
    stored = server.path(name)
    if stored.stat().st_size != done * len(APPEND_BODY):
        raise BenchError(f"{stored} has {stored.stat().st_size} bytes after {done} appends")
    stored.unlink()
    return done / elapsed


def appends_to_file(path: Path, fsync: bool) -> float:
    """Appends/s of the same loop done by Python on a local file: write + flush (+ fsync)."""
    done = 0
    start = time.perf_counter()
    with open(path, "ab") as out:
        while done < APPEND_COUNT and time.perf_counter() - start < APPEND_MAX_SECONDS:
            out.write(APPEND_BODY)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
            done += 1
    elapsed = time.perf_counter() - start
    path.unlink()
    return done / elapsed


def bench_appends(ctx: Context) -> list[Row]:
    log(f"4. {APPEND_COUNT} appends of {APPEND_BODY_BYTES} B over one keep-alive connection")
    local = ctx.work / "append-baseline.log"
    variants = {
        "http-nas append fsync=true": lambda: appends_over_http(ctx.nas_fsync, "append.log"),
        "python append + fsync": lambda: appends_to_file(local, fsync=True),
        "http-nas append fsync=false": lambda: appends_over_http(ctx.nas, "append.log"),
        "python append + flush": lambda: appends_to_file(local, fsync=False),
    }
    results = alternate(ctx.runs, variants)
    ceiling = f"client ceiling {fmt_number(client_ceiling(ctx.nas))} req/s (GET /healthz, same loop)"
    rows = [
        Row(f"append {APPEND_BODY_BYTES} B keep-alive, fsync on", "appends/s",
            results["http-nas append fsync=true"], results["python append + fsync"],
            "python write+flush+fsync"),
        Row(f"append {APPEND_BODY_BYTES} B keep-alive, fsync off", "appends/s",
            results["http-nas append fsync=false"], results["python append + flush"],
            "python write+flush"),
    ]
    for row in rows:
        row.details.append(ceiling)
    return rows


def matrix_worker(port: int, path: str, body: bytes, extra: dict[str, str], method: str, queue) -> None:
    """One client of the append matrix: PUTs `body` (with `extra` headers) for MATRIX_SECONDS;
    reports (count, s)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
    done, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < MATRIX_SECONDS:
            conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream", **extra})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise BenchError(f"{method} {path} answered {response.status}")
            done += 1
        queue.put((done, time.perf_counter() - start))
    except Exception as e:  # reported to the parent, which raises
        queue.put((-1, str(e)))
    finally:
        conn.close()


def local_worker(path: str, body: bytes, fsync: bool, queue) -> None:
    """The baseline client: O_APPEND writes of `body` (+ fsync) to a local file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    done, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < MATRIX_SECONDS:
            os.write(fd, body)
            if fsync:
                os.fsync(fd)
            done += 1
        queue.put((done, time.perf_counter() - start))
    finally:
        os.close(fd)


def run_clients(target, args_of: Callable[[int], tuple], clients: int) -> int:
    """Runs `clients` processes of `target` at once; returns the total count per second."""
    mp = multiprocessing.get_context("fork")
    queue = mp.Queue()
    procs = [mp.Process(target=target, args=args_of(i) + (queue,)) for i in range(clients)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=MATRIX_SECONDS + HTTP_TIMEOUT) for _ in procs]
    for proc in procs:
        proc.join(timeout=SHORT_TIMEOUT)
    failed = [r for r in results if r[0] < 0]
    if failed:
        raise BenchError(f"an append client failed: {failed[0][1]}")
    return sum(n for n, _ in results) / max(s for _, s in results)


def matrix_over_http(server: Server, body: bytes, clients: int, files: int,
                     extra: dict[str, str] | None = None, method: str = "PUT") -> float:
    """Appends (PUT) or uploads (POST, each replacing the file whole) of `body` from `clients`
    processes to `files` files; returns requests per second."""
    names = [f"matrix-{i}.log" for i in range(files)]
    rate = run_clients(matrix_worker,
                       lambda i: (server.port, server.url_prefix + names[i % files], body, extra or {}, method),
                       clients)
    stored = sum(server.path(n).stat().st_size for n in names)
    if stored % len(body):
        raise BenchError(f"append matrix: {stored} bytes stored is not whole {len(body)}-byte bodies")
    for name in names:
        server.path(name).unlink()
    return rate


def matrix_local(work: Path, body: bytes, clients: int, files: int, fsync: bool) -> float:
    paths = [str(work / f"matrix-local-{i}.log") for i in range(files)]
    rate = run_clients(local_worker, lambda i: (paths[i % files], body, fsync), clients)
    for path in paths:
        os.unlink(path)
    return rate


def bench_append_matrix(ctx: Context) -> list[Row]:
    log("4b. append matrix: body size x clients/files x fsync")
    servers = {"": (ctx.nas, ctx.nas_fsync)}
    if COMPARE_BIN:
        compare = Path(COMPARE_BIN)
        servers[" (compared build)"] = (
            start_http_nas(ctx.work, "cmp-nofsync", ctx.data, fsync=False, binary=compare),
            start_http_nas(ctx.work, "cmp-fsync", ctx.data, fsync=True, binary=compare),
        )
    rows = []
    medians: dict[tuple[int, int, int, bool], dict[str, list[float]]] = {}
    for fsync in (True, False):
        for size in MATRIX_BODIES:
            body = os.urandom(size)
            for clients, files in MATRIX_SHAPES:
                shape = f"{clients} client{'s' if clients > 1 else ''} -> {files} file{'s' if files > 1 else ''}"
                label = f"append {fmt_size(size)}, {shape}, fsync {'on' if fsync else 'off'}"
                variants = {
                    f"http-nas{tag}": (lambda srv=pair[1 if fsync else 0]:
                                       matrix_over_http(srv, body, clients, files))
                    for tag, pair in servers.items()
                }
                variants["python"] = lambda: matrix_local(ctx.work, body, clients, files, fsync)
                # Large appends against POSTs of the same bytes (each a whole new file).
                if size >= 256 * KIB:
                    variants["post"] = (lambda srv=servers[""][1 if fsync else 0]:
                                        matrix_over_http(srv, body, clients, files, method="POST"))
                log(f"  {label}")
                results = alternate(ctx.runs, variants, warmup=0)
                medians[(size, clients, files, fsync)] = results
                base_name = "python write+fsync" if fsync else "python write"
                for tag in servers:
                    rows.append(Row(label + tag, "appends/s", results[f"http-nas{tag}"],
                                    results["python"], base_name))
                if "post" in results:
                    rows.append(Row(label + " vs POST", "appends/s", results["http-nas"],
                                    results["post"], "POSTs of the same bytes"))
    rows.append(one_sync_bound(medians))
    return rows


def one_sync_bound(medians: dict[tuple[int, int, int, bool], dict[str, list[float]]]) -> Row:
    """The most any server could reach on the 100 B, one-client row with fsync on: its own
    requests as they cost with fsync off, plus one raw write+fsync each (the client waits for
    both, one after the other). Against raw write+fsync this is off / (off + raw), below 0.5x
    whenever a request round trip costs more than a raw fsync."""
    off = statistics.median(medians[(100, 1, 1, False)]["http-nas"])
    raw = statistics.median(medians[(100, 1, 1, True)]["python"])
    bound = 1 / (1 / off + 1 / raw)
    row = Row("append 100 B, 1 client -> 1 file, fsync on: the bound of one raw fsync per append",
              "appends/s", [bound], [raw], "python write+fsync")
    row.details.append(f"bound = 1 / (1/{off:,.0f} + 1/{raw:,.0f}): this client's fsync-off rate "
                       "with one raw write+fsync added to each request")
    return row


def bench_append_digests(ctx: Context) -> list[Row]:
    log("4c. appends with a verified sha-256 Content-Digest vs without, fsync on")
    import base64
    import hashlib
    rows = []
    for size in MATRIX_BODIES:
        body = os.urandom(size)
        claim = {"Content-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"}
        for clients, files in [(1, 1), (8, 1)]:
            shape = f"{clients} client{'s' if clients > 1 else ''} -> {files} file"
            label = f"append {fmt_size(size)}, {shape}, fsync on, Content-Digest sha-256"
            variants = {
                "with": lambda: matrix_over_http(ctx.nas_fsync, body, clients, files, claim),
                "without": lambda: matrix_over_http(ctx.nas_fsync, body, clients, files),
            }
            log(f"  {label}")
            results = alternate(ctx.runs, variants, warmup=0)
            rows.append(Row(label, "appends/s", results["with"], results["without"],
                            "same appends without a digest"))
    return rows


def fmt_size(size: int) -> str:
    return f"{size // KIB} KiB" if size >= KIB else f"{size} B"


def bench_wc(ctx: Context) -> list[Row]:
    log("5. /wc of the 1 GiB CSV vs wc -l (page cache warm)")
    csv = ctx.data.csv
    size = csv.stat().st_size
    expected = int(run_checked(["wc", "-l", str(csv)], STREAM_TIMEOUT).stdout.split()[0])

    def server_wc() -> float:
        seconds, out = timed(CURL + [ctx.nas.url(CSV_NAME) + "/wc"])
        if out.strip() != str(expected):
            raise BenchError(f"/wc answered {out.strip()!r}, wc -l says {expected}")
        return mib_per_s(size, seconds)

    def local_wc() -> float:
        return mib_per_s(size, timed(["wc", "-l", str(csv)])[0])

    results = alternate(ctx.runs, {"http-nas /wc": server_wc, "wc -l": local_wc})
    row = Row("/wc of 1 GiB CSV (MiB/s of file)", "MiB/s", results["http-nas /wc"],
              results["wc -l"], "wc -l", min_ratio=TARGET_WC_VS_WCL)
    row.details.append(f"{expected} lines")
    return [row]


WRK_RPS_RE = re.compile(r"Requests/sec:\s*([\d.]+)")
WRK_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
WRK_SOCKET_RE = re.compile(r"Socket errors:.*")


def wrk_rps(wrk: str, url: str, connections: int, notes: list[str]) -> float:
    args = [wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{WRK_SECONDS}s", url]
    out = run_checked(args, WRK_SECONDS + SHORT_TIMEOUT).stdout
    rps = WRK_RPS_RE.search(out)
    if not rps:
        raise BenchError(f"no Requests/sec in wrk output:\n{out}")
    non2xx = WRK_NON2XX_RE.search(out)
    if non2xx:
        raise BenchError(f"wrk {url}: {non2xx.group(1)} non-2xx responses")
    socket_errors = WRK_SOCKET_RE.search(out)
    if socket_errors:
        notes.append(f"{url}: {socket_errors.group(0)}")
    return float(rps.group(1))


def bench_wrk(ctx: Context) -> list[Row]:
    rows = [wrk_row(ctx, connections) for connections in WRK_CONNECTIONS]
    return rows + syscall_rows(ctx)


def wrk_row(ctx: Context, connections: int) -> Row:
    name = f"GET 4 KiB keep-alive (wrk -t{WRK_THREADS} -c{connections} -d{WRK_SECONDS}s)"
    if not ctx.wrk:
        log(f"6. {name}: {ctx.wrk_note}")
        return Row(name, "req/s", note=ctx.wrk_note)
    log(f"6. {name}")
    notes: list[str] = []
    variants = {"http-nas wrk": lambda: wrk_rps(ctx.wrk, ctx.nas.url(SMALL_NAME), connections, notes)}
    if ctx.nginx:
        variants["nginx wrk"] = lambda: wrk_rps(ctx.wrk, ctx.nginx.url(SMALL_NAME), connections, notes)
    results = alternate(ctx.runs, variants, warmup=0)  # short runs: a warm-up would cost as much
    row = Row(name, "req/s", results["http-nas wrk"], results.get("nginx wrk", []), "nginx",
              min_ratio=TARGET_WRK_VS_NGINX, note="" if ctx.nginx else ctx.nginx_note)
    row.details += notes
    return row


STRACE_LINE_RE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def server_pids(server: Server) -> list[int]:
    """The process and, for nginx, its workers (children of the master), for strace -p."""
    pids = [server.proc.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.proc.pid:
            pids.append(int(stat.parent.name))
    return pids


def kept_alive_gets(server: Server, file_name: str, count: int) -> None:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=HTTP_TIMEOUT)
    try:
        for _ in range(count):
            conn.request("GET", f"{server.url_prefix}{file_name}")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise BenchError(f"{server.name} GET {file_name}: {resp.status}")
    finally:
        conn.close()


def count_syscalls(strace: str, server: Server, file_name: str, work: Path) -> tuple[float, str]:
    """System calls per kept-alive GET of `file_name` (strace -c -f on every thread and
    process of `server`, SYSCALL_GETS GETs on one connection after one warm-up GET), and the
    calls per GET by name, most first."""
    kept_alive_gets(server, file_name, 1)
    out = work / f"strace-{server.name}.txt"
    args = [strace, "-c", "-f", "-o", str(out)]
    for pid in server_pids(server):
        args += ["-p", str(pid)]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attaching to every thread takes a moment
        kept_alive_gets(server, file_name, SYSCALL_GETS)
        time.sleep(0.3)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=STOP_TIMEOUT)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        match = STRACE_LINE_RE.match(line)
        if match and match.group(2) != "total":
            calls[match.group(2)] = calls.get(match.group(2), 0) + int(match.group(1))
    out.unlink()
    per_get = sum(calls.values()) / SYSCALL_GETS
    named = ", ".join(f"{name} {n / SYSCALL_GETS:.1f}"
                      for name, n in sorted(calls.items(), key=lambda kv: -kv[1])
                      if n / SYSCALL_GETS >= 0.05)
    return per_get, named


def syscall_rows(ctx: Context) -> list[Row]:
    """System calls per kept-alive GET, at the top of the root and four directories deep."""
    strace = find_tool("strace")
    rows = []
    for where, file_name in [("top level", SMALL_NAME), ("4 dirs deep", f"{DEEP_DIR}/{SMALL_NAME}")]:
        name = f"syscalls per kept-alive GET 4 KiB, {where} (strace -c, {SYSCALL_GETS} GETs)"
        if not strace:
            rows.append(Row(name, "calls", note="skipped: strace not installed"))
            continue
        log(f"6. {name}")
        servers = [ctx.nas] + ([ctx.nginx] if ctx.nginx else [])
        for server in servers:
            deep = server.path(DEEP_DIR)
            deep.mkdir(parents=True, exist_ok=True)
            if not (deep / SMALL_NAME).exists():
                shutil.copyfile(server.path(SMALL_NAME), deep / SMALL_NAME)
        counted = {server.name: count_syscalls(strace, server, file_name, ctx.work) for server in servers}
        nas, nas_named = counted[ctx.nas.name]
        row = Row(name, "calls", [nas], [counted["nginx"][0]] if ctx.nginx else [], "nginx",
                  note="" if ctx.nginx else ctx.nginx_note)
        row.details.append(f"http-nas per GET: {nas_named}")
        if ctx.nginx:
            row.details.append(f"nginx per GET: {counted['nginx'][1]}")
        log(f"  http-nas {nas:.1f}, nginx {counted['nginx'][0]:.1f} per GET" if ctx.nginx
            else f"  http-nas {nas:.1f} per GET")
        rows.append(row)
    return rows


def parallel_curls(commands: list[list[str]]) -> None:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    deadline = time.monotonic() + STREAM_TIMEOUT
    failures = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                failures.append(f"exit {proc.returncode}: {err.strip()}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if failures:
        raise BenchError(f"{len(failures)} of {len(procs)} curls failed: {failures[0]}")


def memory_phase(ctx: Context, phase: str, run: int,
                 load: Callable[[Server], None]) -> dict[str, float]:
    """/proc status of a fresh http-nas (default flags) right after `load` ran against it."""
    server = start_http_nas(ctx.work, f"mem-{phase}-{run}", ctx.data, fsync=None)
    try:
        load(server)
        return proc_status_mib(server.proc.pid)
    finally:
        CHILDREN.stop(server.proc)
        shutil.rmtree(server.root, ignore_errors=True)


def one_request(server: Server) -> None:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise BenchError(f"/healthz answered {response.status}")
    finally:
        conn.close()


def concurrent_uploads(ctx: Context, server: Server) -> None:
    source = ctx.data.mem_upload
    parallel_curls([CURL + ["-o", "/dev/null", "-X", "POST", "-T", str(source),
                            server.url(f"mem-upload-{i}.bin")] for i in range(MEM_CONCURRENCY)])
    for i in range(MEM_CONCURRENCY):
        if server.path(f"mem-upload-{i}.bin").stat().st_size != source.stat().st_size:
            raise BenchError(f"concurrent upload {i} stored the wrong size")


def concurrent_downloads(server: Server) -> None:
    parallel_curls([CURL + ["-o", "/dev/null", server.url(RANDOM_NAME)]
                    for _ in range(MEM_CONCURRENCY)])


def bench_memory(ctx: Context) -> list[Row]:
    log("7. memory (fresh server per phase)")
    phases = [
        ("idle VmRSS (after start + 1 request)", "idle", one_request, "VmRSS",
         TARGET_IDLE_RSS_MIB),
        (f"peak VmHWM, {MEM_CONCURRENCY} concurrent 64 MiB uploads", "uploads",
         lambda server: concurrent_uploads(ctx, server), "VmHWM", TARGET_PEAK_RSS_MIB),
        (f"peak VmHWM, {MEM_CONCURRENCY} concurrent 1 GiB downloads", "downloads",
         concurrent_downloads, "VmHWM", TARGET_PEAK_RSS_MIB),
    ]
    rows = []
    for title, phase, load, field, limit in phases:
        row = Row(title + f", worst of {ctx.runs}", "MiB", max_value=limit, aggregate="max")
        for run in range(ctx.runs):
            status = memory_phase(ctx, phase, run, load)
            row.nas.append(status[field])
            log(f"  {phase:28} run {run + 1}/{ctx.runs}: {status[field]:.2f} MiB")
            if field == "VmRSS":  # what the idle RSS is made of: private memory vs mapped files
                row.details.append(f"run {run + 1}: RssAnon {status.get('RssAnon', 0):.2f} MiB,"
                                   f" RssFile {status.get('RssFile', 0):.2f} MiB")
        rows.append(row)
    return rows


def streams_load(server: Server, source: Path, streams: int, probe_latencies: list[float],
                 limit_rate: str | None = None) -> float:
    """`streams` transfers at once, half uploads and half downloads of `source` (POST or, for
    nginx, PUT), while /healthz (http-nas) or / (nginx) is probed; returns the aggregate MiB/s.
    With `limit_rate` (curl's --limit-rate) every client is slow, so all are in flight at once."""
    method = "PUT" if server.name == "nginx" else "POST"
    curl = CURL + (["--limit-rate", limit_rate] if limit_rate else [])
    name = source.name
    for root in {server.root}:
        link_or_copy(source, root / name)
    commands = []
    for i in range(streams):
        if i % 2 == 0:
            commands.append(curl + ["-o", "/dev/null", "-X", method, "-T", str(source),
                                    server.url(f"stream-{i}.bin")])
        else:
            commands.append(curl + ["-o", "/dev/null", server.url(name)])
    probe_url = f"http://{HOST}:{server.port}/healthz" if server.name != "nginx" else server.url("")
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(probe_url, timeout=HTTP_TIMEOUT) as response:
                    response.read()
                probe_latencies.append((time.monotonic() - started) * 1000)
            except OSError:
                probe_latencies.append(HTTP_TIMEOUT * 1000)
            stop.wait(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    started = time.monotonic()
    prober.start()
    try:
        parallel_curls(commands)
    finally:
        stop.set()
        prober.join()
    seconds = time.monotonic() - started
    for i in range(0, streams, 2):
        server.path(f"stream-{i}.bin").unlink(missing_ok=True)
    server.path(name).unlink(missing_ok=True)
    return mib_per_s(source.stat().st_size * streams, seconds)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_streams(ctx: Context) -> list[Row]:
    """The default configuration under 128 and 256 concurrent streams."""
    log("8. concurrent streams (fresh server per run, default flags)")
    source = ctx.work / STREAM_FILE_NAME
    held = ctx.work / HELD_FILE_NAME
    with open(ctx.data.mem_upload, "rb") as src:
        source.write_bytes(src.read(STREAM_BYTES))
        src.seek(0)
        held.write_bytes(src.read(HELD_BYTES))
    rows = []
    try:
        rows = streams_rows(ctx, source, held)
    finally:
        source.unlink(missing_ok=True)
        held.unlink(missing_ok=True)
    return rows


def held_peak(ctx: Context, held: Path, streams: int, run: int) -> float:
    """Peak VmHWM of a fresh default http-nas while `streams` slow clients are all in flight."""
    server = start_http_nas(ctx.work, f"held-{streams}-{run}", ctx.data, fsync=None)
    try:
        streams_load(server, held, streams, [], limit_rate=HELD_RATE)
        return proc_status_mib(server.proc.pid)["VmHWM"]
    finally:
        CHILDREN.stop(server.proc)
        shutil.rmtree(server.root, ignore_errors=True)


def streams_rows(ctx: Context, source: Path, held: Path) -> list[Row]:
    rows = []
    for streams in STREAM_COUNTS:
        rate = Row(f"{streams} streams (half 16 MiB uploads, half downloads)", "MiB/s",
                   base_name="nginx")
        peak = Row(f"peak VmHWM, {streams} streams, worst of {ctx.runs}", "MiB",
                   max_value=TARGET_STREAMS_RSS_MIB, aggregate="max")
        p50 = Row(f"/healthz p50 during {streams} streams", "ms", aggregate="max")
        p99 = Row(f"/healthz p99 during {streams} streams", "ms", aggregate="max",
                  max_value=TARGET_PROBE_P99_MS)
        slow = Row(f"peak VmHWM, {streams} slow streams all in flight ({HELD_RATE}/s each),"
                   f" worst of {ctx.runs}", "MiB", max_value=TARGET_STREAMS_RSS_MIB,
                   aggregate="max")
        for run in range(ctx.runs):
            server = start_http_nas(ctx.work, f"streams-{streams}-{run}", ctx.data, fsync=None)
            latencies: list[float] = []
            try:
                rate.nas.append(streams_load(server, source, streams, latencies))
                status = proc_status_mib(server.proc.pid)
            finally:
                CHILDREN.stop(server.proc)
                shutil.rmtree(server.root, ignore_errors=True)
            peak.nas.append(status["VmHWM"])
            if latencies:
                p50.nas.append(percentile(latencies, 0.5))
                p99.nas.append(percentile(latencies, 0.99))
            log(f"  http-nas {streams} streams run {run + 1}/{ctx.runs}: {rate.nas[-1]:,.0f} MiB/s,"
                f" peak {status['VmHWM']:.1f} MiB, probe p99 {p99.nas[-1] if p99.nas else 0:.1f} ms")
            slow.nas.append(held_peak(ctx, held, streams, run))
            log(f"  http-nas {streams} slow streams run {run + 1}/{ctx.runs}: peak {slow.nas[-1]:.1f} MiB")
            if ctx.nginx is not None:
                nginx_latencies: list[float] = []
                rate.base.append(streams_load(ctx.nginx, source, streams, nginx_latencies))
                log(f"  nginx    {streams} streams run {run + 1}/{ctx.runs}: {rate.base[-1]:,.0f} MiB/s")
        if ctx.nginx is None:
            rate.note = ctx.nginx_note
        rows += [rate, peak, p50, p99, slow]
    return rows


def bench_big_listing(ctx: Context) -> list[Row]:
    """A directory of 100,000 files listed as text and as JSON."""
    log(f"9. listing {LISTING_ENTRIES:,} entries (fresh server)")
    server = start_http_nas(ctx.work, "listing", ctx.data, fsync=None)
    rows = []
    try:
        many = server.root / "many"
        many.mkdir()
        for i in range(LISTING_ENTRIES):
            (many / f"part-{i:06d}.csv").touch()
        ls_row = Row(f"list {LISTING_ENTRIES:,} names", "s", base_name="ls -f | sort")
        for run in range(ctx.runs):
            ls_row.base.append(timed(["sh", "-c", f"ls -f {many} | sort > /dev/null"])[0])
        for accept, label in [("text/plain", "plain"), ("application/json", "JSON")]:
            row = Row(f"GET of {LISTING_ENTRIES:,} entries, {label}", "s") if label == "JSON" else ls_row
            for run in range(ctx.runs):
                seconds, _ = timed(CURL + ["-o", "/dev/null", "-H", f"Accept: {accept}",
                                           server.url("many")])
                row.nas.append(seconds)
            if row is not ls_row:
                rows.append(row)
        rows.insert(0, ls_row)
        status = proc_status_mib(server.proc.pid)
        rows.append(Row(f"peak VmHWM after both listings", "MiB", nas=[status["VmHWM"]],
                        max_value=TARGET_PEAK_RSS_MIB, aggregate="max"))
    finally:
        CHILDREN.stop(server.proc)
        shutil.rmtree(server.root, ignore_errors=True)
    return rows


SECTIONS: list[tuple[str, Callable[[Context], list[Row]]]] = [
    ("GET 1 GiB -> /dev/null (curl)", bench_get),
    ("POST 1 GiB chunked from pipe", bench_chunked_post),
    ("POST 1 GiB Content-Length", bench_content_length_post),
    ("append keep-alive", bench_appends),
    ("append matrix", bench_append_matrix),
    ("appends with digests", bench_append_digests),
    ("/wc of 1 GiB CSV", bench_wc),
    ("GET 4 KiB keep-alive (wrk)", bench_wrk),
    ("memory", bench_memory),
    ("concurrent streams", bench_streams),
    ("big listing", bench_big_listing),
]


SECTION_NUMBERS = ["1", "2", "3", "4", "4b", "4c", "5", "6", "7", "8", "9"]


def run_section(title: str, bench: Callable[[Context], list[Row]], ctx: Context) -> list[Row]:
    """A failing benchmark becomes an error row; the others still run."""
    try:
        return bench(ctx)
    except (BenchError, OSError, subprocess.SubprocessError, http.client.HTTPException,
            ValueError) as e:
        log(f"  ERROR in {title}: {e}")
        return [Row(title, "", note=f"error: {str(e).splitlines()[0][:120]}")]


# ---------------------------------------------------------------------------------------------
# Main


def env_runs() -> int:
    raw = os.environ.get("BENCH_RUNS", str(DEFAULT_RUNS))
    try:
        runs = int(raw)
    except ValueError:
        raise SystemExit(f"BENCH_RUNS must be a positive integer, not {raw!r}") from None
    if runs < 1:
        raise SystemExit("BENCH_RUNS must be at least 1")
    return runs


def start_servers(runs: int, work: Path, data: Data, tools: dict[str, str | None]) -> Context:
    nas = start_http_nas(work, "nas-nofsync", data, fsync=False)
    nas_fsync = start_http_nas(work, "nas-fsync", data, fsync=True)
    nginx, nginx_note = None, ""
    if tools["nginx"]:
        try:
            nginx = start_nginx(work, data, tools["nginx"])
        except (BenchError, OSError) as e:
            nginx_note = f"skipped: nginx did not start ({str(e).splitlines()[0]})"
    else:
        nginx_note = skip_reason("nginx")
    if nginx_note:
        log(nginx_note)
    wrk_note = "" if tools["wrk"] else skip_reason("wrk")
    return Context(runs, work, data, nas, nas_fsync, nginx, nginx_note, tools["wrk"], wrk_note)


def write_results(path: Path, header: str, table: str, details: str, elapsed: float) -> None:
    path.write_text(
        "# http-nas benchmark results\n\n"
        f"{header}\n\n"
        f"{table}\n\n"
        "Ratio = http-nas throughput / baseline throughput (> 1 is better for http-nas).\n"
        f"Total run time {elapsed:.0f} s. Produced by `make bench` (benches/bench.py).\n\n"
        "## Runs\n\n"
        f"{details}\n")


def raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    runs = env_runs()
    if not SERVER_BIN.is_file():
        raise SystemExit(f"{SERVER_BIN} is missing: run `make static` (make bench does) or set BENCH_BINARY")
    started = time.monotonic()
    tools = find_tools()
    data = ensure_data(Path(os.environ.get("BENCH_DATA", DEFAULT_DATA_DIR)))
    work = Path(tempfile.mkdtemp(prefix="run-", dir=data.dir))
    rows: list[Row] = []
    only = [x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()]
    try:
        ctx = start_servers(runs, work, data, tools)
        warm_cache([data.random, data.csv, data.small, data.mem_upload])
        for number, (title, bench) in zip(SECTION_NUMBERS, SECTIONS):
            if not only or number in only:
                rows += run_section(title, bench, ctx)
    finally:
        CHILDREN.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    header = machine_line(runs)
    table = render_table(rows)
    # A run of some sections (BENCH_ONLY) goes beside the full results, never over them.
    path = RESULTS_PATH.with_name("RESULTS-partial.md") if only else RESULTS_PATH
    print(f"\n{header}\n\n{table}\n\ntotal run time {elapsed:.0f} s; written to {path}")
    write_results(path, header, table, render_details(rows), elapsed)
    return 1 if any(row.note.startswith("error") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
