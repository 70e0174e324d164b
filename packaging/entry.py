"""Entry point of the frozen SST Desktop app (PyInstaller): the same command line as `sst-desktop`."""

from __future__ import annotations

import multiprocessing
import os
import sys

# Set to a JSON file path, the bundle runs its packaging self-check instead of the app (tests, CI).
SELFTEST_ENV = "SST_BUNDLE_SELFTEST"


def main() -> int:
    """Run the CLI, or the packaging self-check when $SST_BUNDLE_SELFTEST is set."""
    # A frozen app re-executes itself for multiprocessing children; this hands them over.
    multiprocessing.freeze_support()
    if os.environ.get(SELFTEST_ENV):
        import bundle_selftest

        return bundle_selftest.main(sys.argv[1:])
    from sst_desktop.cli import console_main

    console_main()  # exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
