"""Stage script: `pipeline predict` (see `python scripts/predict.py --help`)."""

import sys

from pipeline.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main(["predict", *sys.argv[1:]]))
