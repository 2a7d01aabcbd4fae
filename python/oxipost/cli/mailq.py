"""mailq(1): the queue listing, the same as `postqueue -p`."""

import contextlib
import os
import sys
from collections.abc import Sequence

from oxipost.cli import postqueue
from oxipost.config import ConfigError, load_config, sendmail_config_dir
from oxipost.log import refuse_maillog_file


def main(argv: Sequence[str] | None = None) -> int:
    """Run mailq with argv (default sys.argv[1:]); accepts -c config_dir like sendmail -C."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_dir = None
    if len(args) >= 2 and args[0] in ("-c", "-C"):
        config_dir = sendmail_config_dir(args[1])
    # Postfix's mailq is sendmail, which reads main.cf (warning as "mailq") before it runs
    # postqueue -p, which reads it again; what cannot be read is postqueue's to report.
    with contextlib.suppress(ConfigError):
        cfg = load_config(config_dir, master_cf=False, stderr_as="mailq")
        if refuse_maillog_file(cfg, "mailq"):
            return os.EX_TEMPFAIL
    return postqueue.show(config_dir, as_json=False)


if __name__ == "__main__":
    sys.exit(main())
