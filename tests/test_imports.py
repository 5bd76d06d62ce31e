"""A run imports only the libraries its config needs: timm (with torchvision),
albumentations and transformers cost seconds at every start, which a competitor training a
table pays on every run and every fold job. (torch._dynamo is not among them: any torch
optimizer imports it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

HEAVY = ("timm", "torchvision", "albumentations", "transformers",
         "sklearn.ensemble", "lightgbm", "xgboost", "catboost", "ray")

_RUN = """
import json, sys
from pipeline.cli import main
main(["run", sys.argv[1]])
print("MODULES " + json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def test_a_tabular_run_imports_no_image_or_text_library(competition_factory,
                                                        tmp_path: Path) -> None:
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=1, optimizer={"name": "adamw", "lr": 3e-3},
                         scheduler={"name": "onecycle"})
    config = tmp_path / "tabular.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PIPELINE_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", _RUN.format(heavy=HEAVY), str(config)],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES "))
    assert json.loads(line.removeprefix("MODULES ")) == []
    assert "CV roc_auc" in out.stdout  # the run itself went through
