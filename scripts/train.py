"""Stage script: `pipeline train` (see `python scripts/train.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["train", *sys.argv[1:]]))
