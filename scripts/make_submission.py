"""Stage script: `pipeline submit` (see `python scripts/make_submission.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["submit", *sys.argv[1:]]))
