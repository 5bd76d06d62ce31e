"""The hand-written k-fold script of ``benchmarks/end_to_end.py``: the recipe of its pipeline
config (model, AdamW without decay on biases and norms, one-cycle, loss, batch size, epochs,
folds), written the way a good competitor writes it for the device at hand.

Images are decoded once into one uint8 tensor on the device and shifted there in batches;
texts are tokenised once (each batch trimmed to its longest row); tables live on the device.
Fused AdamW (torch's one-pass kernel, on the CPU too); bf16 autocast, channels_last and
cudnn.benchmark on CUDA, float32 on the CPU; no host sync inside an epoch. Every epoch is
validated in large batches, the last epoch's weights predict the test rows and the folds'
test probabilities are averaged. Prints (and writes to
``--out``, with ``submission.csv`` beside it) the OOF score and the wall time as JSON.

    python benchmarks/end_to_end_handwritten.py VARIANT DIR [--quick] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from end_to_end import SEED, TASKS, competition_dir, minilm_copy, settings, train_file
from PIL import Image
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import nn

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUDA = DEV.type == "cuda"
MEAN = torch.tensor([0.485, 0.456, 0.406], device=DEV).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225], device=DEV).view(1, 3, 1, 1) * 255
Inputs = Any  # an image tensor, a table tensor, or a dict of token tensors


def load_images(root: Path, paths: pd.Series) -> torch.Tensor:
    def read(p: str) -> np.ndarray:
        with Image.open(root / p) as img:
            return np.asarray(img.convert("RGB"))
    with ThreadPoolExecutor(8) as pool:  # PIL decodes without the GIL
        pixels = np.stack(list(pool.map(read, paths)))
    return torch.from_numpy(pixels).to(DEV).permute(0, 3, 1, 2).contiguous()  # N,3,H,W uint8


def tokenise(folder: Path, texts: pd.Series, max_length: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(folder)(
        texts.fillna("").astype(str).tolist(), truncation=True, max_length=max_length,
        padding="max_length", return_tensors="pt")
    mask = enc["attention_mask"]
    return {"input_ids": enc["input_ids"].to(DEV), "attention_mask": mask.to(DEV),
            "length": mask.sum(1)}  # stays on the host: trims each batch without a sync


def shift(x: torch.Tensor, px: int) -> torch.Tensor:
    """Each image moved by its own random (dy, dx) in [-px, px], zeros let in: two gathers."""
    n, c, h, w = x.shape
    padded = F.pad(x, (px, px, px, px))
    dy, dx = torch.randint(0, 2 * px + 1, (2, n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * px)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def take(x: Inputs, idx: torch.Tensor, idx_dev: torch.Tensor, shift_px: int = 0) -> Inputs:
    """The model inputs of rows ``idx`` (on the host; ``idx_dev``: the same on the device, as
    copying a pageable host tensor to the GPU waits for the GPU's queue)."""
    if isinstance(x, dict):  # tokens, trimmed to the batch's longest row
        width = int(x["length"][idx].max())
        return {k: x[k][idx_dev, :width] for k in ("input_ids", "attention_mask")}
    rows = x[idx_dev]
    if rows.dtype != torch.uint8:
        return rows
    imgs = shift(rows.float(), shift_px) if shift_px else rows.float()
    fmt = torch.channels_last if CUDA else torch.contiguous_format
    return ((imgs - MEAN) / STD).contiguous(memory_format=fmt)


class TextModel(nn.Module):
    """The transformers encoder, mean-pooled over its tokens, under a linear head."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoModel

        self.body = AutoModel.from_pretrained(folder, dtype=torch.float32)
        self.head = nn.Linear(self.body.config.hidden_size, 1)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = x["attention_mask"]
        hidden = self.body(input_ids=x["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)).squeeze(1)


def build_model(variant: str, s: dict[str, Any], root: Path, x: Inputs) -> nn.Module:
    if variant == "text":
        return TextModel(minilm_copy(root)).to(DEV)
    if variant == "tabular":  # the pipeline's MLP on standardised columns (training rows' stats)
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-8)
        width, layers = x.shape[1], []
        for size in s["hidden"]:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.SiLU(),
                       nn.Dropout(s["dropout"])]
            width = size
        return nn.Sequential(Standardise(mean, std), *layers, nn.Linear(width, 10)).to(DEV)
    import timm

    model = timm.create_model(s["model"], pretrained=False, num_classes=10).to(DEV)
    return model.to(memory_format=torch.channels_last) if CUDA else model


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=list(TASKS))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start, root = time.perf_counter(), args.dir.resolve()
    torch.backends.cudnn.benchmark = True
    s, (task, metric, target) = settings(args.variant, args.quick), TASKS[args.variant]
    comp = competition_dir(root, args.variant, args.quick)
    train = pd.read_csv(comp / train_file(args.variant))
    test = pd.read_csv(comp / "test.csv")
    if "image" in train:
        data, test_data = load_images(comp, train["image"]), load_images(comp, test["image"])
    elif "text" in train:
        data, test_data = (tokenise(minilm_copy(root), f["text"], s["max_length"])
                           for f in (train, test))
    else:
        columns = [c for c in train if c.startswith("p")]
        data, test_data = (torch.tensor(f[columns].to_numpy(np.float32), device=DEV)
                           for f in (train, test))
    y = torch.tensor(train[target].to_numpy(), device=DEV)
    y = y.float() if task == "binary" else y
    binary, shift_px = task == "binary", s.get("shift", 0)

    def forward(model: nn.Module, x: Inputs) -> torch.Tensor:
        with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=CUDA):
            return model(x).float()

    def batches(rows: torch.Tensor, size: int) -> Any:
        return zip(rows.split(size), rows.to(DEV).split(size), strict=True)

    @torch.no_grad()
    def predict(model: nn.Module, x: Inputs, rows: np.ndarray) -> torch.Tensor:
        model.eval()
        out = torch.cat([forward(model, take(x, idx, idx_dev)) for idx, idx_dev
                         in batches(torch.from_numpy(rows), 4 * s["batch_size"])])
        return out.sigmoid() if binary else out.softmax(1)

    labels = train[target].astype(str).to_numpy()  # the pipeline stratifies on these strings
    if "digit" in train:  # every copy of a digit in one fold, as the pipeline's group folds
        splitter = StratifiedGroupKFold(s["folds"], shuffle=True, random_state=SEED)
        splits = splitter.split(labels, labels, train["digit"])
    else:
        splits = StratifiedKFold(s["folds"], shuffle=True, random_state=SEED).split(labels, labels)
    oof = torch.zeros((len(train),) if binary else (len(train), 10), device=DEV)
    test_pred = torch.zeros((len(test), *oof.shape[1:]), device=DEV)
    # wall clock at each epoch's start and end: the benchmark's GPU window, the epochs' own
    # seconds and the gaps between folds' epochs (model built, test rows predicted)
    losses, epoch_starts, epoch_ends = [], [], []
    for fold, (tr, va) in enumerate(splits):
        torch.manual_seed(fold)
        model = build_model(args.variant, s, root, data[torch.from_numpy(tr).to(DEV)]
                            if args.variant == "tabular" else None)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=s["lr"], fused=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=s["lr"], total_steps=s["epochs"] * -(-len(tr) // s["batch_size"]),
            pct_start=0.3, cycle_momentum=False)
        for _ in range(s["epochs"]):
            epoch_starts.append(time.time())
            model.train()
            total = torch.zeros((), device=DEV)  # summed on the device: no sync per step
            order = torch.from_numpy(tr)[torch.randperm(len(tr))]
            for idx, idx_dev in batches(order, s["batch_size"]):
                out, yb = forward(model, take(data, idx, idx_dev, shift_px)), y[idx_dev]
                loss = (F.binary_cross_entropy_with_logits(out, yb) if binary
                        else F.cross_entropy(out, yb, label_smoothing=s["smoothing"]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
            losses.append(total)
            valid = predict(model, data, va)
            if CUDA:  # the epoch's end as the GPU sees it (one wait per epoch)
                torch.cuda.synchronize()
            epoch_ends.append(time.time())
        oof[torch.from_numpy(va).to(DEV)] = valid
        test_pred += predict(model, test_data, np.arange(len(test))) / s["folds"]
    oof_np, answers = oof.cpu().numpy(), train[target].to_numpy()
    score = (roc_auc_score(answers, oof_np) if metric == "roc_auc"
             else accuracy_score(answers, oof_np.argmax(1)))
    result = {"variant": args.variant, "metric": metric, "score": float(score),
              "wall_s": time.perf_counter() - start, "device": str(DEV),
              "window": [epoch_ends[0], epoch_ends[-1]],
              "epoch_s": statistics.median(
                  b - a for a, b in zip(epoch_starts, epoch_ends, strict=True)),
              "fold_gaps_s": [epoch_starts[k] - epoch_ends[k - 1]
                              for k in range(s["epochs"], len(epoch_starts), s["epochs"])],
              "epoch_loss_sums": torch.stack(losses).tolist()}
    if args.out:
        pred = test_pred.cpu().numpy()
        pd.DataFrame({"id": test["id"], target: pred if binary else pred.argmax(1)}).to_csv(
            args.out.with_name("submission.csv"), index=False)
        args.out.write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
