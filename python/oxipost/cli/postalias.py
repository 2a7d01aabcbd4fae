"""postalias(1): build and query alias databases (aliases(5) syntax).

    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...

The same program as postmap(1) but for the source format: `name: value` lines, stored
with the value re-externalized as Postfix's RFC 822 scanner does (see oxipost.maps.aliases).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from oxipost._core import maps as _core
from oxipost.cli.postmap import Fatal, by_line, run, source_text, warning_label, write_lmdb
from oxipost.config import Config
from oxipost.maps import os_reason
from oxipost.maps.aliases import parse_aliases

USAGE = "[-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
OPTIONS = "c:d:fimNnopq:rsuvw"


def build_aliases(
    prog: str, kind: str, name: str, fold_keys: bool, dups: str, utf8: bool, cfg: Config
) -> list[str]:
    """Build `<name>.cdb` (`<name>.lmdb`) from the aliases file `name`; return the
    warnings."""
    text, skipped = source_text(name, utf8)
    entries, warnings = parse_aliases(text, name, fold_keys, utf8)
    if kind == "lmdb":
        # Postfix's NIS entries, stored without null bytes and never folded (postalias.c;
        # Debian's is built with HAS_NIS).
        nis = [
            (b"YP_LAST_MODIFIED", b"%010d" % int(time.time())),
            (b"YP_MASTER_NAME", cfg.get("myhostname").encode()),
        ]
        return by_line(warnings + skipped + write_lmdb(name, entries, dups, cfg, plain=nis))
    try:
        warnings += _core.write_cdb(name + ".cdb", entries, warning_label(kind, name), dups)
    except OSError as e:
        raise Fatal(f"open database {name}.cdb: {os_reason(e)}") from None
    return by_line(warnings + skipped)


def main(argv: Sequence[str] | None = None) -> int:
    """Run postalias with argv (default sys.argv[1:]); return the exit status."""
    return run("postalias", argv, USAGE, OPTIONS, build_aliases, key_suffix=":")


if __name__ == "__main__":
    sys.exit(main())
