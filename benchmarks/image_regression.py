"""A PetFinder-Pawpularity-shaped competition, generated: photos of varying size beside 12 binary
metadata columns, an integer score 1..100 scored by RMSE, and held-out answers for the test rows.

Each image is a noisy background with 1-6 discs drawn on it; the score grows with the share of
the picture the discs cover (visible content, kept when an image is stretched to a square) and
a little with two metadata columns (``Eyes`` +8, ``Blur`` -6). Two more columns follow the
picture (``Near``: mostly set when the discs cover much, ``Group``: mostly set with 4+ discs), so
a model of the metadata alone knows part of the score and an image model most of it.

The files are what a Kaggle image set holds: JPEGs of sizes 40-128 px and aspect ratios
0.5-2, some grayscale (mode L), some CMYK, some PNG files saved under ``.jpg`` (RGBA with an
opaque alpha), and some camera JPEGs stored sideways with an EXIF orientation tag (a viewer,
and the score's author, see them upright; their content is rotation-free, so a reader that
ignores the tag scores the same: the tag's handling is checked by a test instead).

    python benchmarks/image_regression.py make DIR [--seed 0] [--train 2000] [--test 600]

writes ``DIR/{train.csv, test.csv, sample_submission.csv, train/<Id>.jpg, test/<Id>.jpg}`` and
``DIR/answers/test_answers.csv`` (``Id,Pawpularity``: what a leaderboard would score), and

    python benchmarks/image_regression.py score DIR SUBMISSION.csv

prints the submission's held-out RMSE (after checking its ids, column and order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

META = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage",
        "Human", "Occlusion", "Info", "Blur"]
TARGET = "Pawpularity"


def _picture(rng: np.random.Generator) -> tuple[Image.Image, float, int]:
    """One RGB picture, the share of it the discs cover, and how many discs there are."""
    w, h = (int(v) for v in rng.integers(40, 129, size=2))
    while not 0.5 <= w / h <= 2.0:
        w, h = (int(v) for v in rng.integers(40, 129, size=2))
    base = rng.integers(20, 120, size=3)
    pixels = np.clip(base + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    mask = Image.new("L", (w, h), 0)
    mdraw = ImageDraw.Draw(mask)
    n = int(rng.integers(1, 7))
    scale = float(rng.uniform(0.05, 0.35))  # one radius scale a picture: the cover varies widely
    for _ in range(n):
        r = scale * min(w, h) * float(rng.uniform(0.7, 1.3))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        box = (cx - r, cy - r, cx + r, cy + r)
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(150, 256, size=3)))
        mdraw.ellipse(box, fill=255)
    cover = float(np.asarray(mask).mean() / 255.0)
    return img, cover, n


def _save(img: Image.Image, path: Path, kind: str) -> None:
    """Write one picture in one of the file kinds a Kaggle image set mixes."""
    if kind == "gray":
        img.convert("L").save(path, "JPEG", quality=92)
    elif kind == "cmyk":
        img.convert("CMYK").save(path, "JPEG", quality=92)
    elif kind == "png_rgba":  # a PNG under a .jpg name: readers go by content, not suffix
        img.convert("RGBA").save(path, "PNG")
    elif kind == "exif":  # a camera's sensor rows, turned 90 degrees counter-clockwise: tag 6
        exif = Image.Exif()  # says to turn them 90 degrees clockwise for display
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=92, exif=exif)
    else:
        img.save(path, "JPEG", quality=92)


def _rows(rng: np.random.Generator, n: int, folder: Path, ids: list[str]) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    kinds = rng.choice(["rgb", "gray", "cmyk", "png_rgba", "exif"], size=n,
                       p=[0.82, 0.06, 0.03, 0.03, 0.06])
    rows = []
    for i, rid in enumerate(ids):
        img, cover, count = _picture(rng)
        _save(img, folder / f"{rid}.jpg", str(kinds[i]))
        meta = (rng.random(len(META)) < 0.3).astype(int)
        meta[META.index("Near")] = int(rng.random() < (0.85 if cover > 0.3 else 0.15))
        meta[META.index("Group")] = int(rng.random() < (0.85 if count >= 4 else 0.1))
        score = (8 + 110 * cover + 8 * meta[META.index("Eyes")] - 6 * meta[META.index("Blur")]
                 + rng.normal(0, 4))
        rows.append({"Id": rid, **dict(zip(META, meta.tolist(), strict=True)),
                     TARGET: int(np.clip(round(score), 1, 100))})
    return pd.DataFrame(rows)


def make(root: Path, seed: int, n_train: int, n_test: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [rng.bytes(16).hex() for _ in range(n_train + n_test)]  # as Pawpularity's ids
    train = _rows(rng, n_train, root / "train", ids[:n_train])
    test = _rows(rng, n_test, root / "test", ids[n_train:])
    train.to_csv(root / "train.csv", index=False)
    test.drop(columns=[TARGET]).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"Id": test["Id"], TARGET: 0.0}).to_csv(root / "sample_submission.csv",
                                                          index=False)
    (root / "answers").mkdir(exist_ok=True)
    test[["Id", TARGET]].to_csv(root / "answers" / "test_answers.csv", index=False)
    print(f"{root}: {n_train} train, {n_test} test images; target mean "
          f"{train[TARGET].mean():.2f}, sd {train[TARGET].std():.2f}; "
          f"mean-baseline held-out RMSE "
          f"{np.sqrt(((test[TARGET] - train[TARGET].mean()) ** 2).mean()):.3f}")


def score(root: Path, submission: Path) -> float:
    """Held-out RMSE of a submission, after checking it is one the leaderboard would take."""
    answers = pd.read_csv(root / "answers" / "test_answers.csv")
    sample = pd.read_csv(root / "sample_submission.csv")
    sub = pd.read_csv(submission)
    if list(sub.columns) != list(sample.columns):
        raise SystemExit(f"{submission}: columns {list(sub.columns)}, sample has "
                         f"{list(sample.columns)}")
    if sub["Id"].tolist() != sample["Id"].tolist():
        raise SystemExit(f"{submission}: ids differ from the sample's, or their order")
    values = sub[TARGET].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise SystemExit(f"{submission}: non-finite values")
    print(f"{submission}: {len(sub)} rows, values {values.min():.2f}..{values.max():.2f}")
    merged = sub.merge(answers, on="Id", suffixes=("_pred", ""))
    return float(np.sqrt(((merged[f"{TARGET}_pred"] - merged[TARGET]) ** 2).mean()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir", type=Path)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--train", type=int, default=2000)
    mk.add_argument("--test", type=int, default=600)
    sc = sub.add_parser("score")
    sc.add_argument("dir", type=Path)
    sc.add_argument("submission", type=Path)
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.dir, args.seed, args.train, args.test)
    else:
        print(f"held-out RMSE {score(args.dir, args.submission):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
