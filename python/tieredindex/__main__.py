"""`python -m tieredindex` runs the command line."""

import sys

from tieredindex.cli import main

sys.exit(main())
