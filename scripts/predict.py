"""Stage script: `pipeline predict` (see `python scripts/predict.py --help`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
