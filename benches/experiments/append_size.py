"""Two writers on two JuiceFS mounts append records under flock; the size to write at comes
from METHOD: fstat (today's protocol), seek_end (lseek SEEK_END), statx_sync (statx with
AT_STATX_FORCE_SYNC). Counts how often each source disagreed with the forced one and checks
the final file record by record."""
import ctypes, fcntl, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
AT_EMPTY_PATH, AT_STATX_FORCE_SYNC, STATX_SIZE = 0x1000, 0x2000, 0x200
class Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32), ("attributes", ctypes.c_uint64),
                ("nlink", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("mode", ctypes.c_uint16), ("pad", ctypes.c_uint16), ("ino", ctypes.c_uint64),
                ("size", ctypes.c_uint64), ("rest", ctypes.c_uint8 * 200)]
def statx_size(fd, flags):
    st = Statx()
    if libc.statx(fd, b"", AT_EMPTY_PATH | flags, STATX_SIZE, ctypes.byref(st)) != 0:
        raise OSError(ctypes.get_errno(), "statx")
    return st.size
def writer(path, name, n, method):
    stale = {"fstat": 0, "seek_end": 0}
    syscalls_t = 0.0
    for i in range(n):
        fd = os.open(path, os.O_RDWR)
        if os.environ.get("POLL_LOCK"):
            # As the service waits: LOCK_NB tries with a growing sleep between them.
            backoff = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.05)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        # Cheapest first: a forced statx refreshes the kernel's attributes for the others.
        fst = os.fstat(fd).st_size
        seek = os.lseek(fd, 0, os.SEEK_END)
        t = time.perf_counter()
        forced = statx_size(fd, AT_STATX_FORCE_SYNC)
        t_forced = time.perf_counter() - t
        stale["fstat"] += fst != forced
        stale["seek_end"] += seek != forced
        size = {"fstat": fst, "seek_end": seek, "statx_sync": forced}[method]
        syscalls_t += t_forced
        rec = f"{name}:{i:06d}:".encode().ljust(63, b"x") + b"\n"
        os.pwrite(fd, rec, size)
        os.fsync(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    print(f"{name} method={method} stale_fstat={stale['fstat']}/{n} stale_seek_end={stale['seek_end']}/{n} "
          f"forced_statx_mean_us={syscalls_t / n * 1e6:.0f}", flush=True)
if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "write":
        writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        data = open(sys.argv[2], "rb").read()
        recs = data.split(b"\n")[:-1]
        bad = [r for r in recs if len(r) != 63]
        names = [r for r in recs if len(r) == 63]
        n = int(sys.argv[3])
        expected = int(os.environ.get("WRITERS", "4")) * n
        print(f"check: {len(data)} bytes, {len(names)} whole records of {expected}, {len(bad)} torn, "
              f"{len(names) - len(set(names))} duplicates")
