"""`python -m hatch_jib` runs the command line."""

import sys

from hatch_jib.cli import main

sys.exit(main())
