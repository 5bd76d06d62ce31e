"""Stage script: `pipeline blend` (see `python scripts/blend.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["blend", *sys.argv[1:]]))
