"""A command's start-up: Python's cyclic garbage collector is paused while the command's
modules import (``console_main``, the process entry point) and while ``build_accelerator``
imports ``torch._dynamo``, which any torch optimizer would import on its first step. Every
full collection walks the whole heap, and an import-heavy start-up sets off one each time
the heap grows by a quarter: ~0.7 s of every start on a 2-core CPU, ~0.5 s more for dynamo."""

from __future__ import annotations

import gc
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.engine.accelerator import build_accelerator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as this test found it, and nothing left frozen by it."""
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def _spy_on_startup(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Record the collector's state while the parser is built and while the command runs."""
    seen: dict[str, object] = {}
    build = cli.build_parser

    def spying_build():
        seen["while importing"] = gc.isenabled()
        return build()

    def command(args) -> int:
        seen["while running"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()
        return 0

    monkeypatch.setattr(cli, "build_parser", spying_build)
    monkeypatch.setattr(cli, "cmd_diversity", command)  # read by build_parser at call time
    return seen


def test_console_main_pauses_the_collector_for_the_imports_only(
        monkeypatch: pytest.MonkeyPatch, collector: None) -> None:
    gc.enable()
    gc.unfreeze()
    seen = _spy_on_startup(monkeypatch)
    assert cli.console_main(["diversity", "--runs", "a"]) == 0
    assert seen["while importing"] is False
    # the command's own work runs with the collector on, the imported modules frozen
    assert seen["while running"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000
    assert gc.isenabled()


def test_console_main_resumes_the_collector_when_the_command_fails(
        monkeypatch: pytest.MonkeyPatch, collector: None) -> None:
    gc.enable()
    monkeypatch.setattr(cli, "build_parser", lambda: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        cli.console_main(["diversity", "--runs", "a"])
    assert gc.isenabled()


def test_main_alone_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch,
                                               collector: None) -> None:
    """Tests and notebooks call main() in a process that lives on: nothing paused or frozen."""
    gc.enable()
    gc.unfreeze()
    seen = _spy_on_startup(monkeypatch)
    assert cli.main(["diversity", "--runs", "a"]) == 0
    assert seen["while importing"] is True and seen["frozen"] == 0


def test_a_collector_the_caller_disabled_stays_disabled(monkeypatch: pytest.MonkeyPatch,
                                                        collector: None) -> None:
    gc.disable()
    seen = _spy_on_startup(monkeypatch)
    assert cli.console_main(["diversity", "--runs", "a"]) == 0
    assert seen["while running"] is False and not gc.isenabled()


def test_every_process_entry_point_is_console_main() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib: Python 3.11+)
    assert re.findall(r'^pipeline = "(.*)"$', pyproject, re.M) == ["pipeline.cli:console_main"]
    assert "console_main()" in (REPO / "pipeline" / "__main__.py").read_text()
    stage_scripts = sorted((REPO / "scripts").glob("*.py"))
    assert stage_scripts
    for script in stage_scripts:
        calls = re.findall(r"\b(\w*main)\(\[", script.read_text())
        assert calls == ["console_main"], script.name


@pytest.mark.parametrize("enabled", [True, False])
def test_build_accelerator_imports_dynamo_and_keeps_the_collector_as_found(
        enabled: bool, collector: None) -> None:
    (gc.enable if enabled else gc.disable)()
    build_accelerator("no")
    assert "torch._dynamo" in sys.modules
    assert gc.isenabled() is enabled
    assert gc.get_freeze_count() > 0
