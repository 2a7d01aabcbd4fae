"""python -m oxipost: the control command, the same as `oxipost` and `postfix`."""

import sys

from oxipost.cli.postfix import main

sys.exit(main())
