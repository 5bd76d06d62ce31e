"""Stage script: `pipeline run` (see `python scripts/run_all.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["run", *sys.argv[1:]]))
