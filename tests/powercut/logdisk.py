"""A disk that remembers the order of its writes and flushes, so that every state a power cut
could leave on it can be rebuilt afterwards.

A one-file FUSE filesystem (fusepy): `disk.img` is the disk (SIZE MiB, kept in memory), put
under a loop device and formatted by the caller; every write to it is logged, and every fsync
(which is what the loop device turns a flush or a FUA write into) is logged as a flush. Writes
to `ctl` are logged as markers, in the same order: a client marks each acknowledgement there
after it has it, so the log tells which acknowledgements came before any point.

Log records: kind (b"W" write, b"F" flush, b"M" marker), offset (u64), length (u32), data.
Single-threaded on purpose: the log's order is the order the kernel sent the requests in.

Usage: logdisk.py MOUNTPOINT SIZE_MIB LOG
"""
import errno
import stat
import struct
import sys
import time

from fuse import FUSE, FuseOSError, Operations

RECORD = struct.Struct("<cQI")


class LogDisk(Operations):
    """The disk, its control file and the log."""

    def __init__(self, size, log_path):
        self.size = size
        self.data = bytearray(size)
        self.log = open(log_path, "wb", buffering=1 << 20)
        self.started = time.time()

    def _log(self, kind, offset, data):
        self.log.write(RECORD.pack(kind, offset, len(data)))
        self.log.write(data)

    def getattr(self, path, fh=None):
        times = dict(st_mtime=self.started, st_ctime=self.started, st_atime=self.started)
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, **times)
        if path == "/disk.img":
            return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=self.size, **times)
        if path == "/ctl":
            return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=0, **times)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk.img", "ctl"]

    def open(self, path, flags):
        if path not in ("/disk.img", "/ctl"):
            raise FuseOSError(errno.ENOENT)
        return 0

    def truncate(self, path, length, fh=None):
        return 0

    def read(self, path, size, offset, fh):
        if path != "/disk.img":
            return b""
        return bytes(self.data[offset:offset + size])

    def write(self, path, buf, offset, fh):
        if path == "/ctl":
            self._log(b"M", 0, bytes(buf))
            return len(buf)
        end = min(self.size, offset + len(buf))
        self.data[offset:end] = buf[:end - offset]
        self._log(b"W", offset, bytes(buf[:end - offset]))
        return len(buf)

    def fsync(self, path, datasync, fh):
        if path == "/disk.img":
            self._log(b"F", 0, b"")
        self.log.flush()
        return 0

    def flush(self, path, fh):
        self.log.flush()
        return 0

    def release(self, path, fh):
        self.log.flush()
        return 0


if __name__ == "__main__":
    mountpoint, size_mib, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    FUSE(LogDisk(size_mib << 20, log_path), mountpoint, foreground=True, nothreads=True)
