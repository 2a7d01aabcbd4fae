"""The cost of one durable spool commit, two ways (why the spool writes zeros ahead).

    .venv/bin/python bench/fdatasync_patterns.py [commits]

Each pattern writes a 1,600-byte record (an smtpd message record) and fdatasyncs it,
`commits` times, in a file under /var/tmp (not /tmp: a tmpfs would make fdatasync free):

  append   the segment writer before: O_APPEND into space reserved with fallocate
           (KEEP_SIZE). Each commit grows the file and fills reserved (unwritten) extents:
           metadata, so fdatasync commits the file system's journal, and ext4 converts the
           extents in a kernel worker besides.
  zeroed   the segment writer now: pwrite over zeros written (and synced) beforehand. The
           size and the block map do not change; fdatasync writes the data and flushes.

Prints, per commit, the wall time and this process's system time, and the kernel workers'
(jbd2, kworker) CPU time. The rounds alternate; a shared machine is noisy, so compare the
rounds of one run.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

RECORD = os.urandom(1600)
PREPARED = 8 << 20
FALLOC_FL_KEEP_SIZE = 1


def kernel_workers_ticks() -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith(("kworker", "jbd2")):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total


def prepare(path: str, pattern: str) -> int:
    with open(path, "wb"):
        pass
    if pattern == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(PREPARED))
    else:
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, bytes(PREPARED))
        os.fdatasync(fd)
    return fd


def measure(pattern: str, commits: int) -> str:
    path = f"/var/tmp/fdatasync-patterns.{os.getpid()}.{pattern}"
    fd = prepare(path, pattern)
    try:
        time.sleep(0.5)  # let the preparation's writeback settle
        workers0, times0, start = kernel_workers_ticks(), os.times(), time.perf_counter()
        offset = 0
        for _ in range(commits):
            if pattern == "append":
                os.write(fd, RECORD)
            else:
                os.pwrite(fd, RECORD, offset)
                offset += len(RECORD)
            os.fdatasync(fd)
        wall = time.perf_counter() - start
        times1, workers1 = os.times(), kernel_workers_ticks()
    finally:
        os.close(fd)
        os.unlink(path)
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    return (
        f"{pattern:7} {1e6 * wall / commits:7.1f} us wall, "
        f"{1e6 * (times1.system - times0.system) / commits:5.1f} us system, "
        f"{(workers1 - workers0) * tick / commits:5.1f} us kernel workers per commit"
    )


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    for _ in range(3):
        for pattern in ("append", "zeroed"):
            print(measure(pattern, commits), flush=True)


if __name__ == "__main__":
    main()
