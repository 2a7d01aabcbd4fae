"""oxipost._core: the Rust core (rust/core) through its pyo3 glue (rust/py).

Kept by hand, in step with rust/py/src; `make test` checks it with mypy.stubtest.
"""

# Submodules: stubtest cannot see into them, tests/delivery/test_mailbox.py checks this stub.
from oxipost._core_stubs import mailbox as mailbox
from oxipost._core_stubs import maps as maps
from oxipost._core_stubs import sched as sched
from oxipost._core_stubs import spool as spool

class CorruptError(Exception):
    """Stored data failed its checks (bad CRC, framing or content)."""

def build_profile() -> str:
    """Return "release" or "debug": benchmarks refuse to run on a debug build."""
