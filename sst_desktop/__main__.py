"""`python -m sst_desktop` runs the command line."""

import sys

from sst_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
