"""pytest-benchmark of the Rust table calls without process start-up (`make bench`).

The whole-process comparison with Postfix's postmap is bench/maps_bench.py.
"""

from __future__ import annotations

import random

import pytest
from oxipost._core import build_profile
from oxipost._core import maps as core

from bench.maps_bench import make_rules

N = 100_000


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    if build_profile() != "release":
        pytest.fail("benchmarks need the release build (make develop)")
    d = tmp_path_factory.mktemp("maps")
    text = "".join(
        f"user{i}@domain{i % 1000}.example relay:[mx{i % 97}.example]\n" for i in range(N)
    )
    return d, text.encode()


def test_build_cdb(benchmark, table):
    d, text = table
    warnings = benchmark(core.build_cdb, text, "t", str(d / "t.cdb"), True, "warn")
    assert warnings == []


def test_cdb_get_many(benchmark, table):
    d, text = table
    core.build_cdb(text, "t", "t", str(d / "q.cdb"), True, False, "warn")
    cdb = core.Cdb(str(d / "q.cdb"))
    rng = random.Random(1)
    keys = [
        f"user{(n := rng.randrange(2 * N))}@domain{n % 1000}.example".encode() for _ in range(N)
    ]
    found = benchmark(cdb.get_many, keys)
    assert 0.4 * N < sum(v is not None for v in found) < 0.6 * N


def test_pcre_lookup_many_mostly_misses(benchmark):
    rng = random.Random(7)
    t = core.RegexTable(make_rules(1000, rng).encode(), "pcre", "rules")
    keys = [f"alice{i}@example.com" for i in range(N)]
    found = benchmark(t.lookup_many, keys)
    assert all(v is None for v in found)
