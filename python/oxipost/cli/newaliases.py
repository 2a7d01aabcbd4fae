"""newaliases(1): rebuild every indexed table named by alias_database.

    newaliases [-c config_dir | -C config_dir]

Postfix's newaliases is `sendmail -bi`, which runs `postalias $alias_database`.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Sequence

from oxipost.cli import postalias
from oxipost.config import ConfigError, load_config
from oxipost.log import refuse_maillog_file
from oxipost.maps import BUILT_TYPES


def main(argv: Sequence[str] | None = None) -> int:
    """Run newaliases with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, _rest = getopt.getopt(args, "c:C:v")
    except getopt.GetoptError as e:
        print(f"newaliases: fatal: usage: newaliases [-c config_dir] ({e})", file=sys.stderr)
        return 1
    config_dir = next((a for o, a in opts if o in ("-c", "-C")), None)
    try:
        cfg = load_config(config_dir, master_cf=False, stderr_as="newaliases")
    except ConfigError as e:
        print(f"newaliases: fatal: {e}", file=sys.stderr)
        return 1
    if refuse_maillog_file(cfg, "newaliases"):
        return os.EX_TEMPFAIL
    default_type = cfg.get("default_database_type") or "hash"
    specs = []
    for spec in cfg.get_list("alias_database"):
        kind = spec.partition(":")[0] if ":" in spec else default_type
        if kind in BUILT_TYPES:
            specs.append(spec)
    if not specs:
        return 0
    conf = ["-c", config_dir] if config_dir else []
    return postalias.main([*conf, *specs])


if __name__ == "__main__":
    sys.exit(main())
