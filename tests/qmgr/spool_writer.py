"""A real writer process for the crash tests: enqueue a stream of messages through the
group-commit path, printing each queue ID only after its durability future resolved."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from oxipost.config import load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import Queue


def content(n: int) -> bytes:
    return f"Subject: message {n}\r\n\r\n".encode() + (b"%d " % n) * (50 + n % 700) + b"\r\n"


def committed_bytes(segment: Path) -> bytearray:
    """A segment's records without the zeros its writer writes ahead of them: what the
    tests cut short or damage, as a crash or a disk would."""
    data = bytearray(segment.read_bytes())
    end = 0
    while end + 8 <= len(data) and (length := int.from_bytes(data[end : end + 4], "little")):
        end += 8 + length
    return data[:end]


async def main(config_dir: str, count: int) -> None:
    q = Queue.open(load_config(config_dir), "crashtest")

    async def one(n: int) -> None:
        env = Envelope(f"s{n}@example.com", [Recipient(f"r{n}@example.org")], time.time())
        qid = await q.enqueue(env, content(n))
        sys.stdout.write(f"{qid} {n}\n")
        sys.stdout.flush()

    sem = asyncio.Semaphore(50)

    async def bounded(n: int) -> None:
        async with sem:
            await one(n)

    await asyncio.gather(*(bounded(n) for n in range(count)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
