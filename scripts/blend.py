"""Stage script: `pipeline blend` (see `python scripts/blend.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["blend", *sys.argv[1:]]))
