"""mailq(1): the queue listing, the same as `postqueue -p`."""

import sys
from collections.abc import Sequence

from oxipost.cli import postqueue


def main(argv: Sequence[str] | None = None) -> int:
    """Run mailq with argv (default sys.argv[1:]); accepts -c config_dir like sendmail -C."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_dir = None
    if len(args) >= 2 and args[0] in ("-c", "-C"):
        config_dir = args[1]
    return postqueue.show(config_dir, as_json=False)


if __name__ == "__main__":
    sys.exit(main())
