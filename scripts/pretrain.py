"""Stage script: `pipeline pretrain` (see `python scripts/pretrain.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["pretrain", *sys.argv[1:]]))
