"""Stage script: `pipeline pretrain` (see `python scripts/pretrain.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
