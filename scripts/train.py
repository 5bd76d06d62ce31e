"""Stage script: `pipeline train` (see `python scripts/train.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
