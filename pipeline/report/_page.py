"""Building the page and the ``pipeline report`` subcommand."""

from __future__ import annotations

import argparse
import re
from html import escape
from pathlib import Path

from pipeline.report._sections import comparison, section
from pipeline.report._source import ReportError, load_source

CSS = """body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:24px}h2{border-bottom:2px solid #4c72b0;padding-bottom:4px;margin-top:40px}
figure{margin:16px 0}figcaption{font-weight:bold;margin-bottom:4px}img{max-width:100%}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.note{color:#777;font-style:italic;font-size:14px}nav a{margin-right:12px}"""


def _slugs(folders: list[Path]) -> list[str]:
    """An HTML id per folder: its name, made safe and unique."""
    slugs: list[str] = []
    for folder in folders:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().name).strip("-") or "source"
        slug, k = base, 2
        while slug in slugs or slug == "comparison":
            slug, k = f"{base}-{k}", k + 1
        slugs.append(slug)
    return slugs


def build_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the HTML report of ``paths`` to ``out`` (default ``<first path>/report.html``)
    and return its path.

    Raises:
        ReportError: a path is missing, or is neither a run nor a blend folder.
    """
    folders = [Path(p) for p in paths]
    sources = [load_source(f, s) for f, s in zip(folders, _slugs(folders), strict=True)]
    out = Path(out) if out is not None else folders[0] / "report.html"
    nav = "".join(f'<a href="#{s.slug}">{escape(s.row.name)}</a>' for s in sources)
    body = [section(s) for s in sources]
    if len(sources) > 1:
        body.append(comparison(sources))
        nav += '<a href="#comparison">comparison</a>'
    title = "Report: " + ", ".join(s.row.name for s in sources)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{escape(title)}</title><style>{CSS}</style></head><body><h1>{escape(title)}"
            f"</h1><nav>{nav}</nav>{''.join(body)}</body></html>\n")
    from pipeline.artifacts import write_text

    try:
        write_text(out, page)
    except OSError as err:
        raise ReportError(f"could not write the report to {out}: {err.strerror or err}") from None
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """``pipeline report``: write the page and print its path."""
    out = build_report(args.paths, args.out)
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report`` to the ``pipeline`` command's subparsers."""
    text = ("a static HTML page of plots of runs and blends: fold scores, learning curves, "
            "confusion matrix, calibration, residuals, TTA views, blend weights, correlation")
    p = sub.add_parser("report", help=text, description=text,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: pipeline report runs/exp1 runs/exp2 blends/mix "
                       "--out report.html")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_BLEND",
                   help="run folders (runs/<name>) and blend folders (blends/<name>)")
    p.add_argument("--out", default=None, metavar="FILE.html",
                   help="where to write the page (default: <first folder>/report.html)")
    p.set_defaults(fn=cmd_report)
