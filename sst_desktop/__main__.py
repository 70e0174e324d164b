"""`python -m sst_desktop` runs the command line."""

from sst_desktop.cli import console_main

if __name__ == "__main__":
    console_main()
