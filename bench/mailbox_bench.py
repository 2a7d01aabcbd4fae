"""Maildir deliveries per second through oxipost._core.mailbox (the local(8)/virtual(8)
write: tmp O_EXCL → write → link into new → one syncfs shared by the deliveries in
flight), beside the one-delivery-at-a-time way in Python (tmp O_EXCL → write → fsync →
link into new → fsync new/), from 1 and 8 threads, on the same disk in the same run. Both
report a delivery only once its file and directory entry are on stable storage.

    .venv/bin/python bench/mailbox_bench.py [--dir DIR] [--seconds S]

The Rust writer releases the GIL for the whole write, so threads overlap their writes and
share syncs; the Python baseline holds the GIL between system calls. This is a micro
benchmark of the last step only: bench/compare_postfix.sh measures it end to end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from oxipost import _core
from oxipost._core import mailbox


def python_maildir(d: str, data: bytes, seq: list[int]) -> None:
    seq[0] += 1
    name = f"{time.time():.6f}.P{os.getpid()}Q{seq[0]}T{threading.get_ident()}.bench"
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    tmp = os.path.join(d, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data.replace(b"\r\n", b"\n"))
        os.fsync(fd)
    finally:
        os.close(fd)
    new = os.path.join(d, "new", f"{name},S={len(data)}")
    os.link(tmp, new)
    os.unlink(tmp)
    dfd = os.open(os.path.join(d, "new"), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def rate(kind: str, base: str, threads: int, size: int, seconds: float) -> float:
    data = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        d = os.path.join(base, f"{kind}-{threads}-{i}")
        seq = [0]
        while time.monotonic() < deadline:
            if kind == "rust":
                status, _, text = mailbox.maildir_deliver(d, b"", data, "bench")
                assert status == "2.0.0", text
            else:
                python_maildir(d, data, seq)
            counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if _core.build_profile() != "release":
        raise SystemExit("refusing to benchmark a debug build")
    base = tempfile.mkdtemp(prefix="mailbox-bench-", dir=args.dir)
    print(f"directory: {base}")
    print("  size threads  rust msg/s  python msg/s  ratio")
    for size in (4096, 65536):
        for threads in (1, 8):
            r = rate("rust", base, threads, size, args.seconds)
            p = rate("python", base, threads, size, args.seconds)
            print(f"{size:6d} {threads:7d} {r:11.0f} {p:13.0f} {r / p:6.2f}")


if __name__ == "__main__":
    main()
