"""End to end: ``pipeline run`` against a hand-written k-fold script, same data, same recipe.

Each variant trains the same model with the same optimizer, schedule, loss, batch size, epochs
and folds twice, as two subprocesses timed wall clock end to end (imports included: both pay
them): ``benchmarks/end_to_end_handwritten.py`` (a k-fold script written the way a good
competitor writes it for the device at hand) and ``python -m pipeline run`` on the equivalent
config. Rounds alternate which goes first. Printed per variant: the wall time of each (median
over rounds), the ratio pipeline / hand, the OOF score of each, on a GPU the mean utilisation
while each ran (NVML, else ``nvidia-smi``), and the device.

Variants, built by ``prepare`` from package-shipped data as competition files on disk:
``small_images`` (MNIST at 32 px, resnet18 from scratch: launch-bound), ``large_images``
(MNIST at 224 px, resnet50 from scratch, the size of a pretrained one: compute-bound),
``text`` (Rotten Tomatoes fresh/rotten, all-MiniLM-L6-v2 at 128 tokens) and ``tabular``
(a 54,000-row table pooled from MNIST, the pipeline's MLP).

Targets: on a GPU, pipeline <= 1.1x the hand-written script in every variant and GPU
utilisation >= 80% in ``large_images``; on the CPU <= 1.05x; the scores within noise.

    python benchmarks/end_to_end.py prepare /tmp/e2e_data
    python benchmarks/end_to_end.py run /tmp/e2e_data [--variants small_images,text]
        [--rounds 1] [--quick] [--out e2e.json] [--pipeline-set train.num_workers=4]
        [--profile DIR]

``--profile DIR`` runs both programs in cProfile and keeps each run's stats and log in DIR
(times then include the profiler's cost: read where the time goes, not the ratio), printing
each program's most expensive functions: on a device, where the gap is, in one call.

``--quick`` shrinks every variant (rows, epochs, 2 folds, a tiny timm model in place of
resnet50, 32 tokens) so all four run on a 2-core CPU in a few minutes; the full sizes are
meant for a GPU (each hand-written run 10-40 s on an H100). GPU results are recorded, with
their command and card, in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import bz2
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
HAND = Path(__file__).resolve().parent / "end_to_end_handwritten.py"
VARIANTS = ("small_images", "large_images", "text", "tabular")
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "NO_ALBUMENTATIONS_UPDATE": "1", "PIPELINE_PROGRESS": "0"}
SEED = 42
GPU_RATIO, CPU_RATIO, GPU_UTIL = 1.1, 1.05, 80.0

# One recipe per variant, read by both programs: the pipeline config is written from it and
# the hand-written script imports it. "rows"/"test_rows" are what prepare writes (full) or
# what the quick subset keeps.
_IMAGE = {"folds": 5, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01, "smoothing": 0.05,
          "shift": 2}
FULL: dict[str, dict[str, Any]] = {
    "small_images": {**_IMAGE, "rows": 1257, "test_rows": 500, "image_size": 32,
                     "model": "resnet18", "epochs": 30},
    "large_images": {**_IMAGE, "rows": 4500, "test_rows": 500, "image_size": 224,
                     "model": "resnet50", "epochs": 6, "folds": 3, "batch_size": 128},
    "text": {"rows": 4000, "test_rows": 1000, "max_length": 128, "folds": 3, "epochs": 2,
             "batch_size": 64, "lr": 5e-5, "weight_decay": 0.01, "smoothing": 0.0},
    "tabular": {"rows": 54000, "test_rows": 500, "folds": 5, "epochs": 10, "batch_size": 512,
                "lr": 3e-3, "weight_decay": 1e-4, "smoothing": 0.0,
                "hidden": [256, 128], "dropout": 0.1},
}
QUICK: dict[str, dict[str, Any]] = {
    "small_images": {**FULL["small_images"], "rows": 240, "test_rows": 60, "folds": 2,
                     "epochs": 3, "batch_size": 16},
    # timm's test_resnet (a few thousand weights) keeps 224 px decoding and augmentation in
    # the quick run at a CPU-friendly cost
    "large_images": {**FULL["large_images"], "rows": 96, "test_rows": 32, "folds": 2,
                     "epochs": 1, "batch_size": 32, "model": "test_resnet"},
    "text": {**FULL["text"], "rows": 160, "test_rows": 64, "max_length": 32, "folds": 2,
             "epochs": 1, "batch_size": 32},
    "tabular": {**FULL["tabular"], "rows": 6000, "test_rows": 200, "folds": 2, "epochs": 2},
}
TASKS = {"small_images": ("multiclass", "accuracy", "label"),
         "large_images": ("multiclass", "accuracy", "label"),
         "text": ("binary", "roc_auc", "fresh"),
         "tabular": ("multiclass", "accuracy", "label")}


def settings(variant: str, quick: bool) -> dict[str, Any]:
    """The recipe of ``variant`` at full or quick size."""
    return dict((QUICK if quick else FULL)[variant])


def competition_dir(root: Path, variant: str, quick: bool) -> Path:
    """Where prepare wrote the competition files of ``variant``."""
    return root / "quick" / variant if quick else root / variant


def train_file(variant: str) -> str:
    """The train file's name: the 54,000-row table is gzipped (6.3 MB -> 2 MB) to travel."""
    return "train.csv.gz" if variant == "tabular" else "train.csv"


def minilm_copy(root: Path) -> Path:
    """The float16 copy of all-MiniLM-L6-v2 that prepare writes."""
    return root / "minilm"


# ---------------------------------------------------------------------------------- prepare


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from pipeline.demo.competitions import mnist_file

    frame = pd.read_csv(mnist_file(), header=None)
    pixels = frame.iloc[:, :-1].to_numpy(dtype=np.uint8).reshape(-1, 28, 28)
    return pixels, frame.iloc[:, -1].to_numpy(dtype=np.int64)


def _draw(labels: np.ndarray, n_train: int, n_test: int | None) -> tuple[np.ndarray, ...]:
    """Stratified draw of ``n_train`` and ``n_test`` row numbers (None: the rest)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    train, test = train_test_split(rows, train_size=n_train, test_size=n_test,
                                   stratify=labels, random_state=SEED)
    return train, test


def _write(folder: Path, train: pd.DataFrame, test: pd.DataFrame, target: str,
           blank: Any, train_name: str = "train.csv") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / train_name, index=False)
    test.drop(columns=target).to_csv(folder / "test.csv", index=False)
    test[["id"]].assign(**{target: blank}).to_csv(folder / "sample_submission.csv", index=False)


def _images(folder: Path, pixels: np.ndarray, labels: np.ndarray, size: int, n_train: int,
            n_test: int) -> None:
    """MNIST digits as RGB PNGs of ``size`` px: 28 -> 32 px bilinear; an exact multiple (224
    = 8 x 28) by pixel repetition, which keeps a PNG at ~1.2 KB instead of ~9 KB so the data
    folder travels. Such a file decodes faster than a photo; as the pipeline decodes every
    epoch and the hand-written script once, photos would widen the gap, not narrow it."""
    from PIL import Image

    train, test = _draw(labels, n_train, n_test)
    both = np.concatenate([train, test])
    frame = pd.DataFrame({"id": [f"img_{i:05d}" for i in range(len(both))],
                          "label": labels[both]})
    frame.insert(1, "image", "images/" + frame["id"] + ".png")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row, rel in zip(both, frame["image"], strict=True):
        resample = Image.NEAREST if size % 28 == 0 else Image.BILINEAR
        img = Image.fromarray(pixels[row], mode="L").resize((size, size), resample)
        img.convert("RGB").save(folder / rel, format="PNG", optimize=True)
    _write(folder, frame[:n_train], frame[n_train:], "label", 0)


def _text(folder: Path, n_train: int, n_test: int) -> None:
    """Rotten Tomatoes snippets, fresh (1) or rotten (0), as in the pipeline's demo."""
    from pipeline.demo.competitions import rotten_tomatoes_file

    with bz2.open(rotten_tomatoes_file(), "rt") as f:
        raw = pd.read_csv(f)
    raw = raw[raw["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    data = pd.DataFrame({"text": raw["text"].str.strip().to_numpy(),
                         "fresh": (raw["category"] == "fresh").astype(int).to_numpy()})
    train, test = _draw(data["fresh"].to_numpy(), n_train, n_test)
    frame = pd.concat([data.iloc[train], data.iloc[test]], ignore_index=True)
    frame.insert(0, "id", np.arange(len(frame)))
    _write(folder, frame[:n_train], frame[n_train:], "fresh", 0.5)


def _tabular(folder: Path, pixels: np.ndarray, labels: np.ndarray, n_rows: int,
             n_test: int) -> None:
    """A table of >= 50,000 rows from MNIST's 5,000 digits: each digit's central 24x24 crop
    mean-pooled over 4x4 blocks (36 numeric columns, 0-255), written ``copies`` times with
    Gaussian noise (std 8, rounded to integers). Every copy of a digit carries its ``digit``
    number in a group column, and the folds keep groups whole (stratified_group), so no digit
    is both trained on and validated: the score stays honest. Test rows are other digits."""
    rng = np.random.default_rng(SEED)
    pooled = pixels[:, 2:26, 2:26].reshape(-1, 6, 4, 6, 4).mean(axis=(2, 4)).reshape(-1, 36)
    train, test = _draw(labels, len(labels) - n_test, n_test)
    copies = -(-n_rows // len(train))
    source = np.tile(train, copies)[:n_rows]
    values = pooled[source] + rng.normal(0.0, 8.0, size=(len(source), 36))
    test_values = pooled[test] + rng.normal(0.0, 8.0, size=(len(test), 36))
    columns = [f"p{i:02d}" for i in range(36)]

    def frame(vals: np.ndarray, digits: np.ndarray, start: int) -> pd.DataFrame:
        out = pd.DataFrame(np.rint(vals).astype(np.int32), columns=columns)
        out.insert(0, "id", np.arange(start, start + len(out)))
        out["digit"] = digits
        out["label"] = labels[digits]
        return out

    train_frame = frame(values, source, 0)
    test_frame = frame(test_values, test, len(source)).drop(columns="digit")
    _write(folder, train_frame, test_frame, "label", 0, train_file("tabular"))


def _minilm(dest: Path, texts: list[str]) -> None:
    """all-MiniLM-L6-v2 made small enough to travel with the data (44 MB -> about 25 MB):
    weights in float16 safetensors, and the vocabulary cut to the tokens that ``texts`` (every
    text of the variant) and the special tokens use, embedding rows kept alike. WordPiece picks
    the longest known piece first; every piece it picked with the whole vocabulary is still
    known and none longer is, so these texts tokenise to the same pieces (checked below).
    ``config.json`` says float32, so both programs load float32 weights."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from pipeline.demo.weights import minilm_dir

    source = minilm_dir()
    full = AutoTokenizer.from_pretrained(source)
    ids = full(texts)["input_ids"]
    keep = sorted(set(full.all_special_ids).union(*map(set, ids)))
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.txt").write_text("".join(vocab[i] + "\n" for i in keep), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(source / name, dest / name)
    tensors = load_file(source / "model.safetensors")
    table = "embeddings.word_embeddings.weight"
    tensors[table] = tensors[table][torch_index(keep)]
    save_file({k: v.half().contiguous() for k, v in tensors.items()},
              dest / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config |= {"vocab_size": len(keep), "torch_dtype": "float32", "dtype": "float32"}
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    new_id = {old: new for new, old in enumerate(keep)}
    small = AutoTokenizer.from_pretrained(dest)
    if small(texts)["input_ids"] != [[new_id[i] for i in row] for row in ids]:
        raise AssertionError("the cut vocabulary tokenises the texts differently")


def torch_index(rows: list[int]) -> Any:
    import torch

    return torch.tensor(rows, dtype=torch.long)


def _quick_subsets(root: Path) -> None:
    """Smaller train/test files for --quick, drawn from the full ones (images are shared)."""
    for variant in VARIANTS:
        cfg, full = QUICK[variant], root / variant
        target = TASKS[variant][2]
        train = pd.read_csv(full / train_file(variant))
        test = pd.read_csv(full / "test.csv")
        if variant == "tabular":  # whole digits (all their copies), so groups stay whole
            digits = train["digit"].drop_duplicates().to_numpy()
            keep = digits[: round(cfg["rows"] * len(digits) / len(train))]
            train = train[train["digit"].isin(keep)]
        else:
            rows, _ = _draw(train[target].to_numpy(), cfg["rows"], None)
            train = train.iloc[np.sort(rows)]
        test = test.iloc[: cfg["test_rows"]].copy()
        if "image" in train:
            for part in (train, test):
                part["image"] = f"../../{variant}/" + part["image"]
        sample = pd.read_csv(full / "sample_submission.csv").iloc[: len(test)]
        folder = root / "quick" / variant
        folder.mkdir(parents=True, exist_ok=True)
        train.to_csv(folder / train_file(variant), index=False)
        test.to_csv(folder / "test.csv", index=False)
        sample.to_csv(folder / "sample_submission.csv", index=False)


def prepare(root: Path) -> None:
    """Write every variant's competition files, the quick subsets and MiniLM into ``root``."""
    pixels, labels = _mnist()
    for variant in ("small_images", "large_images"):
        cfg = FULL[variant]
        _images(root / variant, pixels, labels, cfg["image_size"], cfg["rows"],
                cfg["test_rows"])
    _text(root / "text", FULL["text"]["rows"], FULL["text"]["test_rows"])
    texts = [t for name in ("train.csv", "test.csv")
             for t in pd.read_csv(root / "text" / name)["text"].fillna("").astype(str)]
    _tabular(root / "tabular", pixels, labels, FULL["tabular"]["rows"],
             FULL["tabular"]["test_rows"])
    _minilm(minilm_copy(root), texts)
    _quick_subsets(root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"prepared {root}: {size / 2**20:.1f} MB")


# ------------------------------------------------------------------------------ the config


def pipeline_config(variant: str, root: Path, quick: bool, run_dir: Path) -> dict[str, Any]:
    """The pipeline config equivalent to the hand-written script: no TTA, no precise BN,
    the last epoch's weights, no head dropout (timm's own classifier has none)."""
    s = settings(variant, quick)
    task, metric, target = TASKS[variant]
    competition: dict[str, Any] = {
        "dir": str(competition_dir(root, variant, quick)), "id_column": "id",
        "train_file": train_file(variant), "target_columns": [target], "task": task,
        "metric": metric}
    folds: dict[str, Any] = {"scheme": "stratified", "n_splits": s["folds"], "seed": SEED}
    model: dict[str, Any] = {"head": {"dropout": 0.0, "hidden": 0}}
    train: dict[str, Any] = {"augment": {}}
    if variant in ("small_images", "large_images"):
        competition |= {"modality": "image", "image_column": "image"}
        model |= {"encoders": [{"name": f"timm:{s['model']}"}], "image_size": s["image_size"]}
        shift = [-s["shift"], s["shift"]]
        train["augment"] = {"image": [{"name": "Affine", "translate_px": shift, "p": 1.0}]}
    elif variant == "text":
        competition |= {"modality": "text", "text_columns": ["text"]}
        model |= {"encoders": [{"name": f"hf:{minilm_copy(root)}", "pretrained": True}],
                  "max_length": s["max_length"]}
    else:
        competition |= {"modality": "tabular", "group_column": "digit"}
        folds["scheme"] = "stratified_group"
        model["encoders"] = [{"name": "mlp", "params": {"hidden": s["hidden"],
                                                        "dropout": s["dropout"]}}]
    loss = "bce" if task == "binary" else "cross_entropy"
    train |= {
        "seeds": [0], "epochs": s["epochs"], "batch_size": s["batch_size"],
        "mixed_precision": "auto", "checkpoint": "last", "precise_bn": 0,
        "optimizer": {"name": "adamw", "lr": s["lr"], "weight_decay": s["weight_decay"]},
        "scheduler": {"name": "onecycle", "pct_start": 0.3},
        "loss": {"name": loss, "params": {"smoothing": s["smoothing"]}},
    }
    return {"name": f"e2e-{variant}", "output_dir": str(run_dir / "runs"),
            "folds_dir": str(run_dir / "folds"), "submissions_dir": str(run_dir / "subs"),
            "competition": competition, "folds": folds, "model": model, "train": train,
            "predict": {"tta": []}}


# ---------------------------------------------------------------------------------- timing


class GpuSampler:
    """Mean GPU utilisation (%) over a block, sampled every ``interval`` s in a thread: NVML
    when ``pynvml`` imports, else ``nvidia-smi``; None without a GPU. Samples keep their wall
    clock time, so a window inside the block (the training epochs) has its own mean."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._read = _gpu_reader()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._read() if self._read else None
            if value is not None:
                self.samples.append(value)
                self.times.append(time.time())

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None

    def window_mean(self, window: tuple[float, float] | None) -> float | None:
        """Mean utilisation between two wall clock times (None: no samples there)."""
        if window is None:
            return None
        inside = [s for s, t in zip(self.samples, self.times, strict=True)
                  if window[0] <= t <= window[1]]
        return float(np.mean(inside)) if inside else None


def _gpu_reader() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no pynvml, no driver or no GPU: try nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None

    def read() -> float | None:
        out = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        try:
            return float(out.stdout.split()[0])
        except (IndexError, ValueError):
            return None

    return read if read() is not None else None


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


PROFILE: dict[str, Path] = {}  # "dir": where --profile keeps each child's profile and log


def _child(cmd: list[str], log: Path) -> tuple[float, GpuSampler]:
    """Run ``cmd``; its wall seconds and its GPU samples. Output goes to ``log``; under
    ``--profile`` the child runs in cProfile, its stats beside the log."""
    env = {**os.environ, **CHILD_ENV}
    if PROFILE:
        cmd = [cmd[0], "-m", "cProfile", "-o", str(log.with_suffix(".prof")), *cmd[1:]]
    with log.open("w") as out, GpuSampler() as gpu:
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {code}; log {log}:\n{tail}")
    return wall, gpu


_EPOCH_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) .* epoch \d+/\d+: ")


def log_window(log: Path) -> tuple[float, float] | None:
    """Wall clock times of the first and the last epoch line of a pipeline log (1 s
    resolution: its lines carry HH:MM:SS of today), None without two of them."""
    stamps = [tuple(map(int, m.groups())) for line in log.read_text().splitlines()
              if (m := _EPOCH_LINE.match(line))]
    if len(stamps) < 2:
        return None
    midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
    first, last = (midnight + h * 3600 + m * 60 + s for h, m, s in (stamps[0], stamps[-1]))
    return first, last


_FOLD_LINE = re.compile(r"\(of \d+\): [\d.]+ s: [\d.]+ s in \d+ epoch\(s\), ([\d.]+) s setting up, "
                        r"([\d.]+) s predicting and writing")


def fold_change(log: Path) -> float | None:
    """Mean seconds between two folds' epochs in a pipeline log (a fold's predicting and
    writing, then the next fold's setting up: where the GPU waits), None with one fold."""
    folds = [(float(m.group(1)), float(m.group(2))) for line in log.read_text().splitlines()
             if (m := _FOLD_LINE.search(line))]
    gaps = [done[1] + start[0] for done, start in itertools.pairwise(folds)]
    return statistics.mean(gaps) if gaps else None


def warm_up(root: Path) -> None:
    """Import both programs' libraries and read the data folder once, untimed, so the first
    timed child does not alone pay for a cold file cache."""
    imports = "import torch, timm, transformers, sklearn.metrics, albumentations, pipeline.cli"
    subprocess.run([sys.executable, "-c", imports], cwd=REPO, env={**os.environ, **CHILD_ENV},
                   check=True, capture_output=True)
    for path in root.rglob("*"):
        if path.is_file() and "bench" not in path.parts:
            path.read_bytes()


def run_hand(variant: str, root: Path, quick: bool, work: Path) -> dict[str, Any]:
    out = work / "hand.json"
    cmd = [sys.executable, str(HAND), variant, str(root), "--out", str(out)]
    wall, gpu = _child(cmd + (["--quick"] if quick else []), work / "hand.log")
    result = json.loads(out.read_text())
    return {"wall_s": wall, "score": result["score"], "gpu_util": gpu.mean,
            "gpu_util_epochs": gpu.window_mean(tuple(result["window"])),
            "epoch_s": result["epoch_s"], "fold_gaps_s": result["fold_gaps_s"]}


def run_pipeline(variant: str, root: Path, quick: bool, work: Path,
                 overrides: list[str]) -> dict[str, Any]:
    import yaml

    config = pipeline_config(variant, root, quick, work)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "pipeline", "run", str(path)]
    for item in overrides:
        cmd += ["--set", item]
    wall, gpu = _child(cmd, work / "pipeline.log")
    scores = json.loads((work / "runs" / config["name"] / "scores.json").read_text())
    return {"wall_s": wall, "score": scores["scores"]["oof"], "gpu_util": gpu.mean,
            "gpu_util_epochs": gpu.window_mean(log_window(work / "pipeline.log")),
            "fold_change_s": fold_change(work / "pipeline.log"),
            "epoch_s": epoch_seconds(work / "runs" / config["name"])}


def epoch_seconds(run: Path) -> float | None:
    """Median seconds of the run's epochs (training and validating), from its folds'
    metrics.json: the same span as the hand-written script's ``epoch_s``."""
    seconds = [e["seconds"] for path in run.glob("seed*/fold*/metrics.json")
               for e in json.loads(path.read_text())["epochs"] if "seconds" in e]
    return statistics.median(seconds) if seconds else None


def bench_variant(variant: str, root: Path, rounds: int, quick: bool,
                  overrides: list[str], gpu: bool) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"hand": [], "pipeline": []}
    base = root / "bench"
    base.mkdir(exist_ok=True)
    for r in range(rounds):
        order = ("hand", "pipeline") if r % 2 == 0 else ("pipeline", "hand")
        for who in order:
            # a fresh folder each time: the pipeline skips folds it finds finished
            work = Path(tempfile.mkdtemp(prefix=f"{variant}_{who}_r{r}_", dir=base))
            res = (run_hand(variant, root, quick, work) if who == "hand"
                   else run_pipeline(variant, root, quick, work, overrides))
            runs[who].append(res)
            for weights in work.rglob("*.pt"):  # checkpoints: up to 100 MB a fold
                weights.unlink()
            if PROFILE:
                keep_profile(work, PROFILE["dir"] / f"{variant}_{who}_r{r + 1}", who)
            # each round's line carries all it measured: a run cut short keeps these lines
            util = "" if res["gpu_util"] is None else (
                f"  GPU {res['gpu_util']:.0f}% (epochs {_fmt(res['gpu_util_epochs'], 0)}%)")
            if res.get("epoch_s") is not None:  # an epoch's own time: the two steps compared
                util += f"  epoch {res['epoch_s']:.3f} s"
            if res.get("fold_change_s") is not None:
                util += f"  fold change {res['fold_change_s']:.2f} s"
            if res.get("fold_gaps_s"):
                util += "  fold gaps " + "/".join(f"{g:.2f}" for g in res["fold_gaps_s"]) + " s"
            print(f"  {variant} round {r + 1} {who:8s} {res['wall_s']:7.1f} s  "
                  f"score {res['score']:.4f}{util}", flush=True)
    summary: dict[str, Any] = {"variant": variant, "rounds": rounds}
    for who, results in runs.items():
        utils = [x["gpu_util"] for x in results if x["gpu_util"] is not None]
        steady = [x["gpu_util_epochs"] for x in results if x["gpu_util_epochs"] is not None]
        summary[who] = {"wall_s": statistics.median(x["wall_s"] for x in results),
                        "score": statistics.median(x["score"] for x in results),
                        "gpu_util": statistics.median(utils) if utils else None,
                        "gpu_util_epochs": statistics.median(steady) if steady else None,
                        "runs": results}
    ratio = summary["pipeline"]["wall_s"] / summary["hand"]["wall_s"]
    limit = GPU_RATIO if gpu else CPU_RATIO
    met = ratio <= limit
    if gpu and variant == "large_images":
        util = summary["pipeline"]["gpu_util"]
        met = met and util is not None and util >= GPU_UTIL
    summary |= {"ratio": ratio, "target_ratio": limit, "target_met": met}
    return summary


def keep_profile(work: Path, stem: Path, who: str) -> None:
    """Copy a profiled child's stats and log to ``stem``.prof / .log and print where its
    time went: the 25 functions of most cumulative time, its own code first."""
    import pstats
    import shutil

    log = work / ("hand.log" if who == "hand" else "pipeline.log")
    shutil.copy(log.with_suffix(".prof"), stem.with_suffix(".prof"))
    shutil.copy(log, stem.with_suffix(".log"))
    own = "end_to_end_handwritten" if who == "hand" else "pipeline/"
    stats = pstats.Stats(str(stem.with_suffix(".prof")), stream=sys.stdout)
    print(f"\n  {stem.name}: its own functions, then all, by cumulative time", flush=True)
    stats.sort_stats("cumulative").print_stats(own, 25)
    stats.print_stats(25)


def _fmt(value: float | None, width: int) -> str:
    return f"{'-' if value is None else format(value, '.0f'):>{width}s}"


def report(results: list[dict[str, Any]], device: str, quick: bool) -> None:
    print(f"\ndevice: {device}{' (--quick sizes)' if quick else ''}")
    print(f"{'variant':13s} {'hand s':>8s} {'pipe s':>8s} {'ratio':>6s} {'hand score':>10s} "
          f"{'pipe score':>10s} {'hand GPU%':>9s} {'pipe GPU%':>9s} {'epochs GPU%':>11s}  "
          "target")
    for r in results:
        h, p = r["hand"], r["pipeline"]
        steady = f"{_fmt(h['gpu_util_epochs'], 0)}/{_fmt(p['gpu_util_epochs'], 0)}"
        print(f"{r['variant']:13s} {h['wall_s']:8.1f} {p['wall_s']:8.1f} {r['ratio']:6.2f} "
              f"{h['score']:10.4f} {p['score']:10.4f} {_fmt(h['gpu_util'], 9)} "
              f"{_fmt(p['gpu_util'], 9)} {steady:>11s}  "
              f"{'target met' if r['target_met'] else 'MISSED'} (<= {r['target_ratio']}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write every variant's competition files into DIR")
    prep.add_argument("dir", type=Path)
    run = sub.add_parser("run", help="time the hand-written script against pipeline run")
    run.add_argument("dir", type=Path)
    run.add_argument("--variants", default=",".join(VARIANTS))
    run.add_argument("--rounds", type=int, default=1)
    run.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke run")
    run.add_argument("--out", type=Path, help="also write the results as JSON")
    run.add_argument("--pipeline-set", action="append", default=[], metavar="KEY=VALUE",
                     help="extra --set for every pipeline run (e.g. train.num_workers=4)")
    run.add_argument("--profile", type=Path, metavar="DIR",
                     help="run both programs in cProfile (their times then include its cost: "
                     "not a ratio to report); keep each run's .prof and .log in DIR and print "
                     "where their time went")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    if args.command == "prepare":
        prepare(root)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE["dir"] = args.profile.resolve()
    import torch

    gpu = torch.cuda.is_available()
    device = device_name()
    warm_up(root)
    results = []
    for variant in variants:  # a failing variant is reported; the others still run
        try:
            results.append(bench_variant(variant, root, args.rounds, args.quick,
                                         args.pipeline_set, gpu))
        except RuntimeError as err:
            print(f"  {variant} FAILED: {err}", flush=True)
        if args.out:  # after each variant: a run cut short keeps what it measured
            args.out.write_text(json.dumps({"device": device, "quick": args.quick,
                                            "results": results}, indent=2))
    report(results, device, args.quick)
    return 0 if len(results) == len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
