"""Stage script: `pipeline pseudo` (see `python scripts/pseudo_label.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["pseudo", *sys.argv[1:]]))
