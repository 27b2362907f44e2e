"""Power cuts, simulated: does every write answered 200 survive one, and does a file never
show part of one after one?

The server runs (fsync on) on ext4 on a loop device whose backing file is a disk that logs
its writes and flushes in order (logdisk.py). Clients append bodies that name themselves
(`<client:seq:size:xxx…>\\n`) over kept-alive connections, and others replace a file of their
own whole (POST) with such a body, and one concatenates four sources onto one file (PUT
…/concat) and into another (POST …/concat), each marking every 200 in the same log. Then states a power
cut could leave are rebuilt from the log: every write before some flush, plus the writes after
it up to a cut before the next flush, each whole, not at all, or block by block (what a disk
with a volatile cache may keep); the acknowledgements are those marked before the cut. Each
state is mounted (ext4 replays its journal), the real binary started on it as after a reboot
(another boot id, in a mount namespace), and every file checked, read as found and again after
an empty append has run the writer's recovery: appended files whole bodies only, each client's
in order from its first, every acknowledged one present; uploaded files one whole version, the
last acknowledged or a later one; concatenated files whole copies of their sources only.

Two controls keep the rig honest: `raw` (the clients write+fsync the files themselves, which
promises no atomicity, so only the acknowledged bodies are looked for: must pass) and a server
run with `--fsync false` (acknowledges before anything is on disk: must fail, `--expect-loss`).

Usage: powercut.py BINARY|raw [--states N] [--shape CLIENTSxFILES] [--appends N] [--seed S]
                   [--server-arg ARG]... [--expect-loss]
Exit status: 0 as expected, 1 not, 77 skipped (printed with its reason).
"""
import argparse
import ctypes
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = struct.Struct("<cQI")
DISK_MIB = 64
BODY_SIZES = [100, 700, 5000, 70000]
START = b"start"
EPOCH = 10  # appends to one file name before an appender moves on to the next
BLOCK = 4096  # the disk writes a 4 KiB block whole (ext4 needs that of it: a torn superblock
#               fails its checksum), and may tear a longer write between blocks
SKIP = 77


def sh(*cmd, check=True):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, storage, args, log_path, boot_id=None):
    """The server on `storage`; with `boot_id` (a file), in a mount namespace where
    /proc/sys/kernel/random/boot_id reads as that file: a state a power cut left is found
    after a reboot."""
    port = free_port()
    wrap = []
    if boot_id:
        # Slave propagation: an unmount on the host reaches the namespace, so it never keeps a
        # state's filesystem alive (writing into the next state's image) after the check.
        wrap = ["unshare", "-m", "--propagation", "slave", "sh", "-c",
                f'mount --bind "{boot_id}" /proc/sys/kernel/random/boot_id && exec "$0" "$@"']
    log = open(log_path, "ab")  # outside the filesystem under test
    proc = subprocess.Popen(wrap + [binary, "--listen", f"127.0.0.1:{port}", "--storage", storage, *args],
                            stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError("the server did not start (see server.log)")


def read_answer(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed the connection after {len(rest)} of {length} body bytes")
        rest += chunk
    return int(head.split()[1]), rest


def request(port, method, path, body=b""):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return read_answer(s)


def body(client, seq, rng):
    return exact_body(client, seq, rng.choice(BODY_SIZES))


def exact_body(client, seq, size):
    """The one body `<client:seq:size:` … `>\n` of `size` bytes: its filling repeats its own
    name, so a block of another body, or of zeros, anywhere inside it shows."""
    tag = f"<{client}:{seq}:{size}:"
    fill = f"{client}.{seq}|" * (size // 4 + 1)
    return (tag + fill[:size - len(tag) - 2] + ">\n").encode()


def appended_name(index, seq):
    """The file an appender's `seq`-th body goes to: a new one every [`EPOCH`] appends, so a run
    creates files (and their crash-record slots) all along, not only at its start."""
    return f"f{index}-{seq // EPOCH}.log"


def send_marked(port, method, name_of, client, count, ctl, rng, errors):
    """`count` requests `method` /file/`name_of(seq)` over one connection, each with the body
    `seq` of `client`, each 200 marked in the log."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for seq in range(count):
                name = name_of(seq)
                b = body(client, seq, rng)
                s.sendall(f"{method} /file/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
                status, answer = read_answer(s)
                if status != 200:
                    raise RuntimeError(f"{method} {name} answered {status}: {answer[:200]!r}")
                os.write(ctl, f"{name} {client} {seq}\n".encode())
    except Exception as e:  # reported by the caller
        errors.append(e)


def append_over_http(port, index, client, count, ctl, rng, errors):
    """Appends (PUT) `count` bodies, moving to a new file every [`EPOCH`]."""
    send_marked(port, "PUT", lambda seq: appended_name(index, seq), client, count, ctl, rng, errors)


def upload_over_http(port, name, client, count, ctl, rng, errors):
    """Replaces `name` whole (POST) `count` times, each version one self-describing body."""
    send_marked(port, "POST", lambda _: name, client, count, ctl, rng, errors)


CONCAT_SOURCES = 4


def concat_over_http(port, count, ctl, rng, errors):
    """Uploads CONCAT_SOURCES source files, then `count` times appends all of them to
    `cat.log` as one (PUT …/concat) and replaces `whole.dat` with them (POST …/concat)."""
    try:
        for i in range(CONCAT_SOURCES):
            status, answer = request(port, "POST", f"/file/src{i}.dat", body(900 + i, 0, rng))
            if status != 200:
                raise RuntimeError(f"a source upload answered {status}: {answer[:200]!r}")
        sources = ", ".join(f'"src{i}.dat"' for i in range(CONCAT_SOURCES))
        job = f'{{"sources": [{sources}]}}'.encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for seq in range(count):
                for method, name in (("PUT", "cat.log"), ("POST", "whole.dat")):
                    s.sendall(f"{method} /file/{name}/concat HTTP/1.1\r\nHost: x\r\n"
                              f"Content-Type: application/json\r\nContent-Length: {len(job)}\r\n\r\n".encode() + job)
                    status, answer = read_answer(s)
                    if status != 200:
                        raise RuntimeError(f"{method} concat answered {status}: {answer[:200]!r}")
                    os.write(ctl, f"{name} 0 {seq}\n".encode())
    except Exception as e:
        errors.append(e)


def check_concat(content, sources, acked, name, repeats):
    """None if `content` is the sources joined, `repeats` (True: any whole number of times,
    at least one more than the last acknowledged seq; False: once, or nothing before any
    acknowledgement); else what is wrong."""
    joined = b"".join(sources)
    times, rest = divmod(len(content), len(joined)) if joined else (0, len(content))
    if rest or content != joined * times:
        return f"{name}: {len(content)} bytes are not whole copies of its sources ({len(joined)} bytes)"
    least = acked.get(0, -1) + 1 if repeats else (1 if acked else 0)
    if times < least or (not repeats and times > 1):
        return f"{name}: holds {times} copies of its sources, after {acked.get(0, -1) + 1} acknowledged"
    return None


def append_raw(data, index, client, count, ctl, rng, errors):
    try:
        for seq in range(count):
            name = appended_name(index, seq)
            fd = os.open(f"{data}/{name}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, body(client, seq, rng))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.write(ctl, f"{name} {client} {seq}\n".encode())
    except Exception as e:
        errors.append(e)


def parse_log(path):
    """The log's records; markers (newline-ended lines, which the kernel may split between two
    writes to `ctl` at a page boundary) are put back together, each kept as one record where
    its last part arrived."""
    with open(path, "rb") as f:
        data = f.read()
    at, records, pending = 0, [], b""
    while at + RECORD.size <= len(data):
        kind, offset, length = RECORD.unpack_from(data, at)
        at += RECORD.size
        if kind == b"M":
            pending += data[at:at + length]
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                records.append((kind, 0, line))
        else:
            records.append((kind, offset, data[at:at + length]))
        at += length
    return records


def check_file(content, acked, name, torn_tail=False, first_seq=0):
    """None if `content` is whole bodies only, each client's in order from `first_seq`, holding
    every acknowledged one (`acked`: client -> last acknowledged seq); else what is wrong.
    With `torn_tail` (plain write+fsync, which promises no atomicity), what follows a torn
    body is not looked at: only the acknowledged bodies before it must be there."""
    last = {}
    at = 0
    while at < len(content):
        if content[at:at + 1] != b"<":
            if torn_tail:
                break
            return f"{name}: byte {at} starts no body: {content[at:at + 40]!r}"
        fields = content[at + 1:at + 40].split(b":")
        try:
            client, seq, size = int(fields[0]), int(fields[1]), int(fields[2])
        except (ValueError, IndexError):
            if torn_tail:
                break
            return f"{name}: a torn body at byte {at}: {content[at:at + 40]!r}"
        if content[at:at + size] != exact_body(client, seq, size):
            if torn_tail:
                break
            return f"{name}: body {client}:{seq} at byte {at} is torn"
        expected = last[client] + 1 if client in last else first_seq
        if seq != expected:
            return f"{name}: body {client}:{seq} where {client}:{expected} belongs"
        last[client] = seq
        at += size
    for client, seq in sorted(acked.items()):
        if last.get(client, first_seq - 1) < seq:
            return f"{name}: acknowledged body {client}:{seq} is missing (the file ends at {client}:{last.get(client, -1)})"
    return None


def keep_write(image, offset, data, rng):
    """Applies a write that was in the disk's cache at the cut: whole, not at all, or block by
    block ([`BLOCK`])."""
    how = rng.randrange(3)
    if how == 0:
        image[offset:offset + len(data)] = data
    elif how == 1:
        for at in range(0, len(data), BLOCK):
            if rng.random() < 0.5:
                image[offset + at:offset + at + BLOCK] = data[at:at + BLOCK]


def check_upload(content, acked, name):
    """None if `content` is one whole version of the uploads to `name`, the last acknowledged
    or a later one (or nothing, if none was acknowledged); else what is wrong."""
    if not content:
        return f"{name}: missing, after upload {max(acked.values())} was acknowledged" if acked else None
    fields = content[1:40].split(b":")
    try:
        client, seq, size = int(fields[0]), int(fields[1]), int(fields[2])
    except (ValueError, IndexError):
        return f"{name}: not one whole upload: {content[:40]!r}"
    if content != exact_body(client, seq, size):
        return f"{name}: upload {client}:{seq} is not whole ({len(content)} bytes of {size})"
    if seq < acked.get(client, -1):
        return f"{name}: holds upload {seq}, after upload {acked[client]} was acknowledged"
    return None


class Loop:
    """A loop device over `path`, detached on exit."""

    def __init__(self, path):
        self.dev = sh("losetup", "-f", "--show", path).stdout.strip()

    def __enter__(self):
        return self.dev

    def __exit__(self, *exc):
        sh("losetup", "-d", self.dev, check=False)


def flush_often(path, every, done):
    """`syncfs` of the filesystem holding `path` every `every` seconds until `done`."""
    if every <= 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while not done.wait(every):
            libc.syncfs(fd)
    finally:
        os.close(fd)


def record_workload(args, work):
    """Runs the workload on a logging disk; returns the log's records."""
    mnt, fs, log = f"{work}/disk", f"{work}/fs", f"{work}/disk.log"
    os.mkdir(mnt)
    os.mkdir(fs)
    daemon = subprocess.Popen([sys.executable, f"{HERE}/logdisk.py", mnt, str(DISK_MIB), log])
    try:
        for _ in range(200):
            if os.path.exists(f"{mnt}/disk.img"):
                break
            time.sleep(0.025)
        with Loop(f"{mnt}/disk.img") as dev:
            sh("mkfs.ext4", "-q", "-b", str(BLOCK), "-E", "nodiscard", dev)
            sh("mount", dev, fs)
            try:
                os.mkdir(f"{fs}/data")
                os.sync()  # states are taken after this marker: those before are mkfs's
                ctl = os.open(f"{mnt}/ctl", os.O_WRONLY)
                os.write(ctl, START + b"\n")
                clients, files = args.shape
                errors, threads, proc = [], [], None
                if args.binary != "raw":
                    proc, port = start_server(args.binary, f"{fs}/data", ["--fsync", "true", *args.server_arg],
                                              f"{work}/server.log")
                for c in range(args.uploaders if proc else 0):
                    name, rng = f"u{c}.dat", random.Random(args.seed * 1000 + 500 + c)
                    threads.append(threading.Thread(
                        target=upload_over_http, args=(port, name, c, args.appends, ctl, rng, errors)))
                if proc and args.concats:
                    threads.append(threading.Thread(target=concat_over_http, args=(
                        port, args.concats, ctl, random.Random(args.seed * 1000 + 900), errors)))
                for c in range(clients):
                    rng = random.Random(args.seed * 1000 + c)
                    if proc:
                        target = (append_over_http, (port, c % files, c, args.appends, ctl, rng, errors))
                    else:
                        target = (append_raw, (f"{fs}/data", c % files, c, args.appends, ctl, rng, errors))
                    threads.append(threading.Thread(target=target[0], args=target[1]))
                for t in threads:
                    t.start()
                # Write-back at random moments: without it a slot rewritten and not synced
                # would reach the disk only after the run, and no state would hold it.
                done = threading.Event()
                flusher = threading.Thread(target=flush_often, args=(f"{fs}/data", args.syncfs_ms / 1000, done))
                flusher.start()
                for t in threads:
                    t.join()
                done.set()
                flusher.join()
                if proc:
                    proc.kill()
                    proc.wait()
                os.close(ctl)
                if errors:
                    raise RuntimeError(f"the workload failed: {errors[0]}")
            finally:
                sh("umount", fs, check=False)
    finally:
        daemon.terminate()
        daemon.wait()
    return parse_log(log)


def check_state(args, work, n, state, acked):
    """Mounts rebuilt state `n` and checks every file; returns the problems found."""
    # A file of its own for each state: were an earlier state's filesystem still alive
    # somewhere, it could only write into its own image.
    fs, image = f"{work}/fs", f"{work}/state-{n}.img"
    with open(image, "wb") as f:
        f.write(state)
    try:
        return check_mounted(args, work, image, acked)
    finally:
        os.unlink(image)


def appended_files(args):
    """Every file the appenders may have made, with the first seq each client writes to it."""
    epochs = (args.appends + EPOCH - 1) // EPOCH
    return [(f"f{i}-{e}.log", e * EPOCH) for i in range(args.shape[1]) for e in range(epochs)]


def check_mounted(args, work, image, acked):
    fs = f"{work}/fs"
    problems = []
    with Loop(image) as dev:
        sh("mount", dev, fs)
        try:
            os.makedirs(f"{fs}/data", exist_ok=True)
            files = appended_files(args)
            if args.binary == "raw":
                for name, first in files:
                    path = f"{fs}/data/{name}"
                    content = open(path, "rb").read() if os.path.exists(path) else b""
                    problem = check_file(content, acked.get(name, {}), name, torn_tail=True, first_seq=first)
                    problems += [problem] if problem else []
                return problems
            boot = f"{work}/boot_id"
            with open(boot, "w") as f:
                f.write(f"{uuid.uuid4()}\n")
            proc, port = start_server(args.binary, f"{fs}/data", ["--fsync", "true", *args.server_arg],
                                      f"{work}/server.log", boot)
            try:
                for when in ("as found", "after an empty append"):
                    for name, first in files:
                        status, content = request(port, "GET", f"/file/{name}")
                        if status == 404:
                            content = b""
                        elif status != 200:
                            problems.append(f"{name} {when}: GET answered {status}")
                            continue
                        problem = check_file(content, acked.get(name, {}), name, first_seq=first)
                        if problem:
                            problems.append(f"{problem} ({when})")
                    for c in range(args.uploaders):
                        name = f"u{c}.dat"
                        status, content = request(port, "GET", f"/file/{name}")
                        if status not in (200, 404):
                            problems.append(f"{name} {when}: GET answered {status}")
                            continue
                        problem = check_upload(content if status == 200 else b"", acked.get(name, {}), name)
                        if problem:
                            problems.append(f"{problem} ({when})")
                    if args.concats:
                        sources = [request(port, "GET", f"/file/src{i}.dat") for i in range(CONCAT_SOURCES)]
                        if any(status != 200 for status, _ in sources):
                            sources = None  # cut before the sources were whole: nothing was concatenated
                        for name, repeats in (("cat.log", True), ("whole.dat", False)):
                            status, content = request(port, "GET", f"/file/{name}")
                            content = content if status == 200 else b""
                            if sources is None:
                                if content or acked.get(name):
                                    problems.append(f"{name} {when}: present without its sources")
                                continue
                            problem = check_concat(content, [b for _, b in sources], acked.get(name, {}), name, repeats)
                            if problem:
                                problems.append(f"{problem} ({when})")
                    if when == "as found":
                        for name, _ in files:
                            request(port, "PUT", f"/file/{name}")
            finally:
                proc.kill()
                proc.wait()
        finally:
            sh("umount", fs, check=False)
    return problems


def skip_reason(args):
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    for tool in ("losetup", "mkfs.ext4", "unshare"):
        if not shutil.which(tool):
            return f"no {tool}"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as e:
        return f"fusepy or libfuse2 missing ({e})"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--shape", default="4x2", type=lambda s: tuple(int(x) for x in s.split("x")))
    parser.add_argument("--appends", type=int, default=40, help="per client")
    parser.add_argument("--uploaders", type=int, default=2,
                        help="clients replacing a file of their own whole (POST), as many times")
    parser.add_argument("--concats", type=int, default=10,
                        help="concatenations of 4 sources, each appended (PUT) and replacing (POST)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--expect-loss", action="store_true")
    parser.add_argument("--keep-log", help="copy the disk's log here (to study a failure)")
    parser.add_argument("--syncfs-ms", type=float, default=3.0,
                        help="syncfs the recorded filesystem this often while the workload runs (0: never)")
    args = parser.parse_args()
    if args.binary != "raw":
        args.binary = os.path.abspath(args.binary)
    label = " ".join([("raw write+fsync" if args.binary == "raw" else os.path.basename(args.binary)), *args.server_arg]) + \
            f" {args.shape[0]} clients -> {args.shape[1]} files, seed {args.seed}"
    reason = skip_reason(args)
    if reason:
        print(f"powercut: skipped: {reason}")
        return SKIP
    print(f"powercut: {label}: recording", flush=True)
    # A TERM (a CI timeout) unwinds like an error, so mounts and loop devices are released.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    work = tempfile.mkdtemp(prefix="powercut-")
    try:
        records = record_workload(args, work)
        flushes = [i for i, r in enumerate(records) if r[0] == b"F"]
        start = next(i for i, r in enumerate(records) if r == (b"M", 0, START))
        candidates = [k for k in range(len(flushes) - 1) if flushes[k] > start]
        rng = random.Random(args.seed)
        points = sorted(rng.sample(candidates, min(args.states, len(candidates))))
        image, applied, failed = bytearray(DISK_MIB << 20), 0, []
        for n, k in enumerate(points):
            while applied < flushes[k]:  # durable: every write before flush k
                kind, offset, data = records[applied]
                if kind == b"W":
                    image[offset:offset + len(data)] = data
                applied += 1
            cut = rng.randint(flushes[k] + 1, flushes[k + 1])
            state = bytearray(image)
            for kind, offset, data in records[flushes[k] + 1:cut]:
                if kind == b"W":  # in the disk's cache: kept, lost, or kept in part
                    keep_write(state, offset, data, rng)
            acked = {}
            for kind, _, data in records[:cut]:
                if kind == b"M" and data != START:
                    name, client, seq = data.decode().split()
                    acked.setdefault(name, {})[int(client)] = int(seq)
            problems = check_state(args, work, n, state, acked)
            failed += [f"state {n} (after flush {k}, cut at record {cut}): {p}" for p in problems]
        acks = sum(1 for r in records if r[0] == b"M") - 1
        print(f"powercut: {label}: {len(records)} writes and flushes, {acks} writes acknowledged, "
              f"{len(points)} power-cut states, {len(failed)} problems")
        for line in failed[:3 if args.expect_loss else 10]:
            print(f"  {line[:300]}")
        if args.expect_loss:
            if failed:
                print("  (expected: this server acknowledges before its writes are on disk)")
                return 0
            print("powercut: FAILED: no loss found where it must be: the rig does not see power cuts")
            return 1
        return 1 if failed else 0
    finally:
        if args.keep_log:
            shutil.copy(f"{work}/disk.log", args.keep_log)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
