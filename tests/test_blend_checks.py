"""``pipeline blend``'s own arguments (pipeline/blend_checks.py): a method, parameter, name,
folder or storage it cannot use is one line, exit 2, and no blend folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.ensemble import build_blender
from tests.test_blend import make_competition

# each was a traceback (KeyError, ValueError, NotADirectoryError, IsADirectoryError,
# sqlalchemy's NoSuchModuleError), most with an empty blend folder left behind, or a blend
# written outside --blends-dir ('../x') or in a folder of its own ('a/b')
CASES = [
    (["--method", "nope"], "--method: Unknown blender 'nope'"),
    (["--method", "mean", "--param", "zz=1"], "unknown parameter(s) ['zz']"),
    (["--method", "optuna", "--trials", "0"], "The 'n_trials' parameter of OptunaBlender"),
    (["--method", "power", "--param", "power=-1"], "The 'power' parameter of PowerBlender"),
    (["--method", "hill_climb", "--param", "n_iter=many"], "The 'n_iter' parameter"),
    (["--method", "hill_climb", "--param", "bag_fraction=2"], "The 'bag_fraction' parameter"),
    (["--method", "stacking", "--param", "model=ridge"], "The 'model' parameter"),
    (["--method", "mean", "--name", "../x"], "--name '../x' must be a plain name"),
    (["--method", "mean", "--name", "a/b"], "--name 'a/b' must be a plain name"),
    (["--method", "optuna", "--storage", "nope://x"], "is not a database URL"),
    (["--method", "optuna", "--storage", "{tmp}"], "is a folder"),
    (["--method", "mean", "--blends-dir", "{tmp}/exp.yaml"], "--blends-dir"),
]


@pytest.mark.parametrize(("args", "said"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_blend_argument_it_cannot_use_is_one_line_and_no_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str) -> None:
    runs, _ = make_competition(tmp_path, "binary", "roc_auc", [1.0, 0.5, 0.2])
    (tmp_path / "exp.yaml").write_text("a file, not a folder\n")
    blends = tmp_path / "blends"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["blend", "--runs", *map(str, runs), "--blends-dir", str(blends), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and said in err, err
    assert not blends.exists() and not (tmp_path / "x").exists()


def test_a_blender_checks_its_parameters_before_fit() -> None:
    """check_params is what the stage calls before making the blend folder; fit calls it
    too, so a blender used alone refuses the same values."""
    with pytest.raises(ValueError, match="'n_trials'"):
        build_blender("optuna", n_trials=1).check_params()
    with pytest.raises(ValueError, match="'power'"):
        build_blender("power", power=0).fit([[[0.2]], [[0.4]]], [[0.0]])
    build_blender("hill_climb", n_iter=0).check_params()  # the initial members alone
