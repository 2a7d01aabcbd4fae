"""The one answer of a command whose issue has not landed yet."""

import os
import sys


def not_built(name: str) -> int:
    """Say on stderr that `name` is not implemented yet; the caller exits 1."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else name
    print(f"{prog}: fatal: not implemented yet", file=sys.stderr)
    return 1
