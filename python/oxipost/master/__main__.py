"""python -m oxipost.master [-c config_dir]: the master process itself (what `start` runs)."""

import sys

from oxipost.master.master import Master

config_dir = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "-c" else None
sys.exit(Master(config_dir).run())
