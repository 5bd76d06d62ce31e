"""Run, blend and submission folders that cannot be written in: a Kaggle notebook's datasets
lie on a read-only file system (/kaggle/input). Each stage that writes there is refused in
one line saying what to do; those that only read a run still work."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from tests.test_competition import run_cli
from tests.test_data_files import _two_members


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``read_only(folder)``: writes under ``folder`` fail as on a read-only mount (EROFS),
    root's included (a folder's mode stops other users alone, and tests may run as root)."""
    held: list[Path] = []

    def inside(path: Any) -> bool:
        if isinstance(path, int):  # a file descriptor
            return False
        where = Path(os.path.abspath(os.fsdecode(path)))
        return any(where == f or f in where.parents for f in held)

    def refuse(path: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def guard(real: Callable[..., Any], writes: Callable[..., bool]) -> Callable[..., Any]:
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            if writes(*args, **kwargs) and inside(path):
                refuse(path)
            return real(path, *args, **kwargs)
        return guarded

    def text_mode(mode: str = "r", *args: Any, **kwargs: Any) -> bool:
        return any(c in mode for c in "wax+")

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    opened = guard(builtins.open, text_mode)
    monkeypatch.setattr(builtins, "open", opened)
    monkeypatch.setattr(io, "open", opened)
    monkeypatch.setattr(os, "open", guard(os.open, lambda flags, *a, **k: flags & write_flags))
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), lambda *a, **k: True))
    for name in ("replace", "rename"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda src, dst, real=real, **k: (
            refuse(dst) if inside(src) or inside(dst) else real(src, dst, **k)))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **k: (
        False if mode & os.W_OK and inside(path) else real_access(path, mode, **k)))
    return lambda folder: held.append(Path(os.path.abspath(folder)))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _one_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_predict_in_a_read_only_run_folder_says_to_copy_it(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        read_only: Callable[[Path], None], one_thread) -> None:
    """A run folder attached to a notebook as a dataset, predicted in place: a traceback
    (OSError: Read-only file system: '.../log.txt'). One line now says to copy it and set
    output_dir; submit --config, which only reads the run, still writes its submission, and
    the copy predicts."""
    cfg = competition_factory("tabular", "binary")
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    before = _files(run_dir)
    read_only(run_dir)
    for command in (["predict", "--config", str(path)], ["run", str(path)],
                    ["train", "--config", str(path)]):
        assert main(command) == 2
        _one_line(capsys.readouterr().err, f"cannot write in {run_dir}", "set output_dir")
    assert _files(run_dir) == before
    assert main(["submit", "--config", str(path)]) == 0, capsys.readouterr().err
    copy = tmp_path / "working" / "runs"
    shutil.copytree(run_dir, copy / cfg["name"])
    assert main(["predict", "--config", str(path), "--set", f"output_dir={copy}"]) == 0, \
        capsys.readouterr().err


def test_a_read_only_blends_or_submissions_folder_is_refused_in_one_line(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        read_only: Callable[[Path], None]) -> None:
    """A blend made again, or a submission written, into a folder attached read-only ended
    in a traceback (mkdir, mkstemp: Read-only file system)."""
    cfg, ridge = _two_members(competition_factory, tmp_path, capsys)
    runs = [str(Path(c["output_dir"]) / c["name"]) for c in (cfg, ridge)]
    blends = tmp_path / "blends"
    assert main(["blend", "--runs", *runs, "--method", "mean", "--name", "mix",
                 "--blends-dir", str(blends)]) == 0, capsys.readouterr().err
    before = _files(blends)
    read_only(blends)
    assert main(["blend", "--runs", *runs, "--method", "mean", "--name", "mix",
                 "--blends-dir", str(blends)]) == 0, "an up-to-date blend writes nothing"
    for method in ("mean", "hill_climb"):  # into a new folder; over the old one
        assert main(["blend", "--runs", *runs, "--method", method, "--name", "other",
                     "--blends-dir", str(blends)]) == 2
        _one_line(capsys.readouterr().err, "cannot write in", "--blends-dir")
    assert main(["blend", "--runs", *runs, "--method", "hill_climb", "--name", "mix",
                 "--blends-dir", str(blends), "--overwrite"]) == 2
    _one_line(capsys.readouterr().err, f"cannot write in {blends / 'mix'}")
    assert _files(blends) == before
    subs = tmp_path / "read-only-submissions"
    subs.mkdir()
    read_only(subs)
    assert main(["submit", "--blend", str(blends / "mix"), "--submissions-dir",
                 str(subs)]) == 2
    _one_line(capsys.readouterr().err, "cannot write", "read-only file system",
              "submissions_dir")
