"""qshape(1): the queue's shape, by domain and age (QSHAPE_README).

    qshape [-c config_dir] [-s] [-t minutes] [-b buckets] [queue ...]

Rows are recipient domains (sender domains with -s), largest first, after a TOTAL row;
columns count messages by age: T (all), then buckets of 5, 10, 20, ... minutes (each twice
the previous, `-b` of them, the first `-t` minutes long), the last open-ended.
Default queues: incoming and active.
"""

from __future__ import annotations

import getopt
import sys
import time
from collections import Counter
from collections.abc import Sequence

from oxipost.config import ConfigError, load_config
from oxipost.qmgr.queue import QUEUES, QueueState

PROG = "qshape"


def shape(
    state: QueueState, queues: list[str], senders: bool, first: int, buckets: int, now: float
) -> list[str]:
    limits = [first * (2**i) for i in range(buckets - 1)]
    labels = ["T", *[str(x) for x in limits], f"{limits[-1]}+" if limits else "0+"]
    rows: dict[str, list[int]] = {}
    total = [0] * len(labels)
    for info in state.messages.values():
        if info.state not in queues:
            continue
        age = (now - info.arrival_time) / 60
        col = next((i for i, lim in enumerate(limits) if age <= lim), len(limits)) + 1
        if senders:
            domains = Counter([info.sender.rpartition("@")[2].lower() or "MAILER-DAEMON"])
        else:
            domains = Counter(r.address.rpartition("@")[2].lower() for _i, r in info.pending)
        for domain, n in domains.items():
            row = rows.setdefault(domain, [0] * len(labels))
            row[0] += n
            row[col] += n
            total[0] += n
            total[col] += n
    width = max([len("TOTAL"), *(len(d) for d in rows)])
    widths = [max(len(lab), len(str(total[i]))) for i, lab in enumerate(labels)]

    def line(name: str, cells: Sequence[object]) -> str:
        return f"{name:>{width}} " + " ".join(
            f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)
        )

    out = [line("", labels), line("TOTAL", total)]
    for domain, row in sorted(rows.items(), key=lambda kv: (-kv[1][0], kv[0])):
        out.append(line(domain, row))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run qshape with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, queues = getopt.getopt(args, "b:c:m:N:n:pst:w:l")
    except getopt.GetoptError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    o = dict(opts)
    for q in queues:
        if q not in QUEUES:
            print(f"{PROG}: unknown queue: {q}", file=sys.stderr)
            return 1
    try:
        state = QueueState(load_config(o.get("-c"), master_cf=False))
    except ConfigError as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    lines = shape(
        state,
        queues or ["incoming", "active"],
        "-s" in o,
        int(o.get("-t", 5)),
        int(o.get("-b", 10)),
        time.time(),
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
