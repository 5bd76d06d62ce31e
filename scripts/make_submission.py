"""Stage script: `pipeline submit` (see `python scripts/make_submission.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["submit", *sys.argv[1:]]))
