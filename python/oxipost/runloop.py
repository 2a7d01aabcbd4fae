"""The one way a service runs its asyncio loop: on uvloop when it is installed.

DESIGN: one loop per process, uvloop when there. Every SMTP command and every delivery is a
few loop turns, and uvloop's turns and socket writes cost a fraction of the pure-Python
selector loop's (the "speed" extra installs it; without it, asyncio's own loop runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # the "speed" extra is optional
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the fastest loop available."""
    if uvloop is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
