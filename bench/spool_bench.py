"""Durable appends per second through the group-commit spool, beside the one-file-per-message
baseline (create, write, fsync, rename, fsync the directory: what a classic MTA pays),
on the same disk in the same run.

    .venv/bin/python bench/spool_bench.py [--dir DIR] [--seconds S]

Producers are asyncio tasks in one process, each waiting for its own message to be durable
before sending the next, as smtpd sessions do. A single producer is latency-bound, so its
p50/p99 commit latency is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from oxipost import _core
from oxipost.config import load_config
from oxipost.durable import write_atomically
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import Queue


async def spool_rate(
    queue: Queue, producers: int, size: int, seconds: float
) -> tuple[float, list[float]]:
    body = b"x" * size
    env = Envelope("bench@example.com", [Recipient("to@example.org")], time.time())
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    count = 0

    async def producer() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await queue.enqueue(env, body)
            latencies.append(time.perf_counter() - t0)
            count += 1

    start = time.monotonic()
    await asyncio.gather(*(producer() for _ in range(producers)))
    return count / (time.monotonic() - start), latencies


def file_rate(directory: str, producers: int, size: int, seconds: float) -> float:
    body = b"x" * size
    deadline = time.monotonic() + seconds
    counts = [0] * producers

    def producer(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            write_atomically(os.path.join(directory, f"m{i}-{n}"), body, 0o600)
            n += 1
        counts[i] = n

    start = time.monotonic()
    with ThreadPoolExecutor(producers) as pool:
        list(pool.map(producer, range(producers)))
    return sum(counts) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir under ./var)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the event loop (smtpd uses uvloop when it is installed)",
    )
    args = ap.parse_args()
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    if _core.build_profile() != "release":
        raise SystemExit("refusing to benchmark a debug build: run `make develop`")
    os.makedirs("var", exist_ok=True)
    base = args.dir or tempfile.mkdtemp(prefix="spool-bench-", dir="var")
    print(f"directory: {os.path.abspath(base)}, event loop: {args.loop}")
    print(f"{'size':>6} {'producers':>9} {'spool msg/s':>12} {'file+fsync msg/s':>17} {'ratio':>7}")
    for size in (1024, 65536):
        for producers in (1, 20, 200):
            conf = tempfile.mkdtemp(dir=base)
            with open(os.path.join(conf, "main.cf"), "w") as f:
                f.write(f"queue_directory = {conf}/queue\n")
            queue = Queue.open(load_config(conf), "bench")
            rate, lat = run(spool_rate(queue, producers, size, args.seconds))
            queue.close()
            files = tempfile.mkdtemp(dir=base)
            baseline = file_rate(files, min(producers, 64), size, args.seconds)
            line = (
                f"{size:>6} {producers:>9} {rate:>12.0f} {baseline:>17.0f} {rate / baseline:>7.1f}"
            )
            if producers == 1:
                q = statistics.quantiles(lat, n=100)
                line += f"   commit latency p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms"
            print(line, flush=True)


if __name__ == "__main__":
    main()
