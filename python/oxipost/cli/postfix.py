"""postfix(1): not built yet; its issue fills this module in."""

import sys

from oxipost.cli._unbuilt import not_built


def main() -> int:
    """Run postfix with sys.argv; return the exit status."""
    return not_built("postfix")


if __name__ == "__main__":
    sys.exit(main())
