"""Lookup tables: oxipost's postmap beside Postfix's, as whole processes, in one run.

    .venv/bin/python bench/maps_bench.py [--dir DIR] [--entries N] [--keys N] [--runs N]

Three loads, each timed for both tools on the same files (best of --runs, wall clock):
1. build a table of --entries `key value` lines: `postmap cdb:FILE` (oxipost's hash: is
   the same cdb build; Postfix's hash: is Berkeley DB, shown for reference);
2. --keys lookups through `postmap -q - cdb:FILE` (hits and misses mixed, half each);
3. a 1,000-rule pcre table against --keys keys that mostly miss: `postmap -q - pcre:FILE`.
Outputs of the lookups are compared, so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

POSTFIX_POSTMAP = "/usr/sbin/postmap"


def timed(cmd: list[str], cwd: str, stdin: bytes | None = None) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True)
    elapsed = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return elapsed, p.stdout


def best(runs: int, cmd: list[str], cwd: str, stdin: bytes | None = None) -> tuple[float, bytes]:
    results = [timed(cmd, cwd, stdin) for _ in range(runs)]
    return min(r[0] for r in results), results[0][1]


def make_rules(n: int, rng: random.Random) -> str:
    """Rules in the style of real header/sender checks: anchored domains, words, classes."""
    words = ["viagra", "casino", "lottery", "winner", "bitcoin", "invoice", "urgent", "prize"]
    rules = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            rules.append(f"/@([a-z0-9-]+\\.)*spam{i}\\.example$/ REJECT listed {i}")
        elif kind == 1:
            rules.append(f"/^{rng.choice(words)}{i}[0-9]+@/ DISCARD rule {i}")
        elif kind == 2:
            rules.append(f"/^(.+)\\+bulk{i}@(.*)$/ REDIRECT $1@$2")
        else:
            rules.append(f"/\\b{rng.choice(words)}-{i}\\b/i WARN word {i}")
    return "\n".join(rules) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(POSTFIX_POSTMAP):
        subprocess.run(["bash", "scripts/install-debian-deps.sh"], check=True)
    ours = [os.path.join(os.path.dirname(sys.executable), "postmap")]
    base = tempfile.mkdtemp(prefix="maps-bench-", dir=args.dir)
    try:
        conf = os.path.join(base, "conf")
        os.mkdir(conf)
        open(os.path.join(conf, "main.cf"), "w").close()
        theirs = [POSTFIX_POSTMAP, "-c", conf]
        ours += ["-c", conf]
        rng = random.Random(7)
        with open(os.path.join(base, "big"), "w") as f:
            f.writelines(
                f"user{i}@domain{i % 1000}.example relay:[mx{i % 97}.example]\n"
                for i in range(args.entries)
            )
        rows = []
        # 1. build
        t_ours, _ = best(args.runs, [*ours, "cdb:big"], base)
        os.rename(os.path.join(base, "big.cdb"), os.path.join(base, "ours.cdb"))
        t_pf, _ = best(args.runs, [*theirs, "cdb:big"], base)
        t_pf_hash, _ = best(1, [*theirs, "hash:big"], base)
        rows.append((f"build {args.entries:,} entries (cdb:)", t_ours, t_pf))
        # 2. batch lookups: half hits (random entries), half misses
        picks = (rng.randrange(args.entries) for _ in range(args.keys))
        keys = [
            f"user{n}@domain{n % 1000}.example" if i % 2 else f"nobody{i}@nowhere.example"
            for i, n in enumerate(picks)
        ]
        stdin = "".join(f"{k}\n" for k in keys).encode()
        t_ours_q, out_ours = best(args.runs, [*ours, "-q", "-", "cdb:ours"], base, stdin)
        t_pf_q, out_pf = best(args.runs, [*theirs, "-q", "-", "cdb:big"], base, stdin)
        if out_ours != out_pf:
            sys.exit("lookup outputs differ between oxipost and Postfix")
        rows.append((f"{args.keys:,} lookups, postmap -q - (cdb:)", t_ours_q, t_pf_q))
        # 3. pcre, mostly misses
        with open(os.path.join(base, "rules.pcre"), "w") as f:
            f.write(make_rules(1000, rng))
        senders = [
            f"{rng.choice(['alice', 'bob', 'carol', 'dave'])}{i}@"
            f"{rng.choice(['example.com', 'mail.example.org', f'spam{i % 1000}.example'])}"
            for i in range(args.keys)
        ]
        stdin = "".join(f"{s}\n" for s in senders).encode()
        t_ours_re, out_ours = best(args.runs, [*ours, "-q", "-", "pcre:rules.pcre"], base, stdin)
        t_pf_re, out_pf = best(args.runs, [*theirs, "-q", "-", "pcre:rules.pcre"], base, stdin)
        if out_ours != out_pf:
            sys.exit("pcre outputs differ between oxipost and Postfix")
        hits = out_pf.count(b"\n")
        rows.append((f"1,000 pcre rules x {args.keys:,} keys ({hits:,} hits)", t_ours_re, t_pf_re))
        print(f"directory: {base}, best of {args.runs} runs, wall clock seconds")
        print(f"  {'load':52} {'oxipost':>8} {'Postfix':>8} {'ratio':>6}")
        for name, a, b in rows:
            print(f"  {name:52} {a:8.3f} {b:8.3f} {b / a:6.1f}")
        print(f"  (Postfix hash: build of the same file, Berkeley DB: {t_pf_hash:.3f} s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
