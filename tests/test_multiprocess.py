"""A multi-process launch is refused on every rank, including ``torchrun`` on a CPU machine,
where Accelerate does not join the ranks unless told to (ACCELERATE_USE_CPU): before the fix
each rank saw one process and trained the same run folder as the other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = '''
import sys
from pathlib import Path
from pipeline.engine.accelerator import build_accelerator
from pipeline.errors import PipelineError

out, rank = Path(sys.argv[1]), __import__("os").environ["RANK"]
try:
    build_accelerator("no")
    (out / f"rank{rank}.txt").write_text("accepted")
except PipelineError as err:
    (out / f"rank{rank}.txt").write_text(str(err))
'''


@pytest.mark.timeout(120)
def test_torchrun_with_two_cpu_processes_is_refused_on_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "two_ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("ACCELERATE_USE_CPU", None)  # the case Accelerate itself does not see
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29533", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=110, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "multi-process launch (2 processes) is not supported" in message
