"""postalias(1): not built yet; its issue fills this module in."""

import sys

from oxipost.cli._unbuilt import not_built


def main() -> int:
    """Run postalias with sys.argv; return the exit status."""
    return not_built("postalias")


if __name__ == "__main__":
    sys.exit(main())
