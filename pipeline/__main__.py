"""``python -m pipeline``: the same command line as the ``pipeline`` script (for machines where
the package sits on PYTHONPATH without its console script)."""

from pipeline.cli import console_main

raise SystemExit(console_main())
