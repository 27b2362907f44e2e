#!/usr/bin/env python3
"""What scale-out costs and buys: 1, 2 and 3 replicas of http-nas on one GlusterFS volume and on
one JuiceFS volume (each under the strict profile, one FUSE mount per replica, .ci/gluster and
.ci/juicefs), against one replica on local disk.

Run by `make bench-replicas`. Each configuration gets 16 concurrent clients spread round-robin
over its replicas, for two workloads, each run BENCH_RUNS times (median):
  - uploads: every client POSTs a 4 MiB file 8 times (MiB/s over all clients);
  - appends: every client appends 100-byte records to one of 4 shared files over a kept-alive
    connection for 5 s (appends/s over all clients), fsync on.
The numbers are printed as a table with each configuration's ratio to the local single replica.
A second table puts one client appending 100-byte records to one file through one replica beside
a Python loop doing `write` + `fsync` of the same records on a file of the same volume, each for
5 s (fsync on), on local disk and on each volume.
Only the Python 3.11 standard library is used; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BINARY = Path(os.environ.get("BENCH_BINARY", TARGET / "release" / "http-nas"))
# The shared volumes: label, set-up script, and its directory.
VOLUMES = [("GlusterFS", "gluster", TARGET / "gluster-bench"), ("JuiceFS", "juicefs", TARGET / "juicefs-bench")]
CLIENTS = 16
UPLOAD_BYTES = 4 * 1024 * 1024
UPLOADS_PER_CLIENT = 8
APPEND_SECONDS = 5.0
APPEND_FILES = 4
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([str(BINARY), "--listen", f"127.0.0.1:{port}", "--storage", str(root),
                             "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"http-nas on {root} did not start")


def uploads(ports: list[int], body: bytes) -> float:
    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=120)
        for n in range(UPLOADS_PER_CLIENT):
            conn.request("POST", f"/file/up/c{i}-{n}.bin", body=body)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"upload answered {response.status}")
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    return CLIENTS * UPLOADS_PER_CLIENT * len(body) / seconds / (1024 * 1024)


def appends(ports: list[int]) -> float:
    counts = [0] * CLIENTS
    stop = time.monotonic() + APPEND_SECONDS

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=60)
        record = f"c{i:02d}:".encode() + b"x" * 95 + b"\n"
        while time.monotonic() < stop:
            conn.request("PUT", f"/file/log-{i % APPEND_FILES}.csv", body=record)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"append answered {response.status}")
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / APPEND_SECONDS


def one_client_appends(port: int) -> float:
    """Appends/s of one client appending 100-byte records to one file for APPEND_SECONDS."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    record = b"x" * 99 + b"\n"
    count = 0
    stop = time.monotonic() + APPEND_SECONDS
    while time.monotonic() < stop:
        conn.request("PUT", "/file/single.csv", body=record)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"append answered {response.status}")
        count += 1
    conn.close()
    return count / APPEND_SECONDS


def raw_appends(directory: Path) -> float:
    """Appends/s of a Python loop writing and fsyncing 100-byte records to a file in `directory`."""
    path = directory / "raw-appends.csv"
    record = b"x" * 99 + b"\n"
    count = 0
    try:
        with open(path, "ab") as out:
            stop = time.monotonic() + APPEND_SECONDS
            while time.monotonic() < stop:
                out.write(record)
                out.flush()
                os.fsync(out.fileno())
                count += 1
    finally:
        path.unlink(missing_ok=True)
    return count / APPEND_SECONDS


def single_client(name: str, root: Path) -> tuple[str, float, float]:
    """One client through one replica vs raw write+fsync on the same volume, alternating."""
    nas, raw = [], []
    for _ in range(RUNS):
        (root / "single.csv").unlink(missing_ok=True)
        proc, port = start(root)
        try:
            nas.append(one_client_appends(port))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        raw.append(raw_appends(root))
        print(f"  {name:28} one client: {nas[-1]:8.0f} appends/s, raw write+fsync {raw[-1]:8.0f}/s", flush=True)
    (root / "single.csv").unlink(missing_ok=True)
    return name, statistics.median(nas), statistics.median(raw)


def measure(name: str, roots: list[Path], body: bytes) -> tuple[str, float, float]:
    up, ap = [], []
    for run in range(RUNS):
        for root in roots[:1]:
            shutil.rmtree(root / "up", ignore_errors=True)
            for f in root.glob("log-*.csv"):
                f.unlink()
        servers = [start(root) for root in roots]
        try:
            ports = [port for _, port in servers]
            up.append(uploads(ports, body))
            ap.append(appends(ports))
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=30)
        print(f"  {name:28} run {run + 1}/{RUNS}: {up[-1]:8.1f} MiB/s uploads, {ap[-1]:8.0f} appends/s",
              flush=True)
    return name, statistics.median(up), statistics.median(ap)


def volume_rows(label: str, script: Path, directory: Path, body: bytes,
                singles: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """1, 2 and 3 replicas on the volume `script` sets up (none where FUSE is missing); the
    one-client row goes to `singles`."""
    up = subprocess.run([str(script), "up", str(directory), "3"], capture_output=True, text=True)
    if up.returncode == 3:
        print(f"{label} rows skipped: this machine cannot mount FUSE")
        return []
    if up.returncode != 0:
        raise SystemExit(f"the {label} volume did not come up: {up.stderr}")
    rows = []
    try:
        mounts = [Path(m) for m in up.stdout.split()]
        shared = "bench"
        (mounts[0] / shared).mkdir(exist_ok=True)
        singles.append(single_client(label, mounts[0] / shared))
        for n in (1, 2, 3):
            roots = [m / shared for m in mounts[:n]]
            rows.append(measure(f"{n} replica{'s' if n > 1 else ''}, {label}", roots, body))
        shutil.rmtree(mounts[0] / shared, ignore_errors=True)
    finally:
        subprocess.run([str(script), "down", str(directory)])
    return rows


def main() -> int:
    if not BINARY.is_file():
        raise SystemExit(f"{BINARY} is missing: `cargo build --release` (make bench-replicas does)")
    body = os.urandom(UPLOAD_BYTES)
    local = Path(tempfile.mkdtemp(prefix="http-nas-replicas-"))
    rows = []
    singles: list[tuple[str, float, float]] = []
    try:
        singles.append(single_client("local disk", local))
        rows.append(measure("1 replica, local disk", [local], body))
        for label, script, directory in VOLUMES:
            rows.extend(volume_rows(label, REPO / ".ci" / script, directory, body, singles))
    finally:
        shutil.rmtree(local, ignore_errors=True)
    base_up, base_ap = rows[0][1], rows[0][2]
    print(f"\n{CLIENTS} clients spread over the replicas; medians of {RUNS} runs\n")
    print("| configuration | uploads (4 MiB POSTs) | vs local | appends (100 B, fsync on) | vs local |")
    print("|---|---|---|---|---|")
    for name, up_rate, ap_rate in rows:
        print(f"| {name} | {up_rate:,.0f} MiB/s | {up_rate / base_up:.2f}x | {ap_rate:,.0f}/s |"
              f" {ap_rate / base_ap:.2f}x |")
    print(f"\nOne client appending 100 B records to one file through one replica, fsync on, against a"
          f" Python write+fsync loop on the same volume; medians of {RUNS} runs\n")
    print("| volume | http-nas, 1 client | raw write+fsync | ratio |")
    print("|---|---|---|---|")
    for name, nas_rate, raw_rate in singles:
        print(f"| {name} | {nas_rate:,.0f}/s | {raw_rate:,.0f}/s | {nas_rate / raw_rate:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
