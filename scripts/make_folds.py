"""Stage script: `pipeline folds` (see `python scripts/make_folds.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["folds", *sys.argv[1:]]))
