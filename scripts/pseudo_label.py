"""Stage script: `pipeline pseudo` (see `python scripts/pseudo_label.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["pseudo", *sys.argv[1:]]))
