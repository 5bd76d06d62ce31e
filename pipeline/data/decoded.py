"""Images decoded once per process: every fold, epoch and prediction of a run reads the same
files, and decoding a PNG or JPEG costs more than training on it at small sizes.

Decoded pixels (uint8, RGB, turned as their EXIF orientation says) are kept until they would
take more than ``PIPELINE_DECODE_CACHE_GB`` (default: a quarter of the machine's memory); past
that, images are decoded from disk each time they are read, and the log says so once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from pipeline.errors import DataError

log = logging.getLogger(__name__)

_cache: dict[str, np.ndarray] = {}
_state = {"bytes": 0, "full": False}
# 16-bit images whose values all fit in 12 bits (see _low_bits), for check_images to name
_low_bit_paths: set[str] = set()
_lock = threading.Lock()  # decode_many fills the cache from several threads


def cache_budget() -> int:
    """Bytes the decoded images may take."""
    env = os.environ.get("PIPELINE_DECODE_CACHE_GB")
    if env:
        return int(float(env) * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):  # not every platform reports its memory
        return 4 * 2**30


def decode_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as a read-only H x W x 3 uint8 array (from the cache if held)."""
    key = str(path)
    pixels = _cache.get(key)
    if pixels is not None:
        return pixels
    try:
        with Image.open(path) as img:
            pixels = _rgb(_upright(img))
            low = _low_bits(img)
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None
    pixels.setflags(write=False)  # shared by every reader: augmentations must copy
    with _lock:
        _keep(key, pixels)
        if low:
            _low_bit_paths.add(key)
    return pixels


# not an image, truncated, a format PIL cannot decode; a damaged header PIL reads into values
# it then refuses (ValueError: a BMP or TIFF with a flipped byte); or more pixels than PIL
# decodes (Image.MAX_IMAGE_PIXELS: a whole-slide or satellite image, to be tiled or downscaled
# first), which PIL raises as an error of its own
_UNREADABLE = (OSError, ValueError, Image.DecompressionBombError)


# EXIF orientation -> the turn that shows the image as viewers do (ImageOps.exif_transpose's
# table; that function also writes the tag out of the image's metadata, which raised
# struct.error on a damaged EXIF block that reads without error)
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def _upright(img: Image.Image) -> Image.Image:
    """``img`` as every viewer shows it: a phone photo stores its sensor's rows and an EXIF
    tag saying how to turn them (a test set shot another way round than the train set would
    be read on its side or upside down)."""
    turn = _TURNS.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    return img if turn is None else img.transpose(turn)


def _low_bits(img: Image.Image) -> bool:
    """Whether ``img`` is 16-bit grayscale whose values all fit in 12 bits (a 10- or 12-bit
    sensor's X-ray or microscope frame stored in 16 bits): scaled from the 16-bit range, as
    a file of the full range must be, it spans 17 of 8-bit's 256 grey levels (a probe's
    such digits among 13 other formats: held-out accuracy 0.62, full-range 16-bit 0.94)."""
    if not (img.mode == "I" or img.mode.startswith("I;16")):
        return False
    top = img.getextrema()[1]  # one band: (low, high) numbers
    return isinstance(top, int | float) and 0 < top <= 4095


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: could not be read as an image ({err})")


def _rgb(img: Image.Image) -> np.ndarray:
    """``img`` as H x W x 3 uint8. Integer grayscale deeper than 8 bits (16-bit PNGs open as
    'I;16' or 'I') is scaled down from the 16-bit range: PIL's own conversion clips every
    value above 255, which turns such an image white. Float grayscale ('F') is scaled by
    :func:`_float_gray`; an image with transparency is laid over white (:func:`_on_white`)."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        gray = ((np.asarray(img, dtype=np.int64) + 128) // 257).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        return np.repeat(_float_gray(np.asarray(img))[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        return np.asarray(_on_white(img))
    return np.asarray(img.convert("RGB"))


def _on_white(img: Image.Image) -> Image.Image:
    """An image with transparency as viewers and web pages show it: over white. Dropping the
    alpha channel (PIL's conversion) kept the colour stored under transparent pixels, often
    black: a black glyph or icon drawn in its alpha channel alone read as an all-black image
    (a circle-vs-square set of them scored chance)."""
    rgba = img.convert("RGBA")  # palette transparency too (without PIL's warning about it)
    if rgba.getchannel("A").getextrema()[1] == 0:
        # transparent everywhere: over white every such image is one blank square (an
        # exporter that left the alpha at 0); its colours are the only content it has
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _float_gray(values: np.ndarray) -> np.ndarray:
    """A float image (a 32-bit TIFF of measurements or of normalised pixels) as uint8. PIL's
    conversion clips to [0, 255]: an image of values in [0, 1], the usual range of float
    pixels, turned black. Values within [0, 1] are scaled by 255, values within [0, 255]
    kept, any other range stretched from the image's own minimum to its maximum (nothing
    else says what it spans); NaN and infinities are 0."""
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    values = values.astype(np.float64)
    if low >= 0.0 and high <= 1.0:
        values *= 255.0
    elif low < 0.0 or high > 255.0:
        values = (values - low) * (255.0 / ((high - low) or 1.0))  # a constant image: 0
    values[~finite] = 0.0
    return np.rint(values).clip(0, 255).astype(np.uint8)


def decode_many(paths: Sequence[Path | str]) -> list[np.ndarray]:
    """:func:`decode_rgb` of every path; when many are not held yet, by a pool of threads
    (PIL decodes without the GIL: the first fold of a large image set starts that much
    sooner)."""
    if sum(str(p) not in _cache for p in paths) <= 32:
        return [decode_rgb(Path(p)) for p in paths]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(decode_rgb, map(Path, paths)))


def check_images(paths: Sequence[Path | str], decode: bool = True) -> None:
    """Refuse an unreadable image before a run writes anything (its folds file, its run
    folder), not at its first fold's read. Each image is decoded into the cache while the
    cache has room, where the run's first read then finds it (decoded once, as before); past
    that, or with ``decode=False`` (the run reads its images in other processes), only its
    header is read: a file that is no image at all is found here, one whose pixels are cut
    short at its first read."""
    todo = [Path(p) for p in dict.fromkeys(map(str, paths)) if p not in _cache]
    if len(todo) <= 32:
        problems = [_problem(path, decode) for path in todo]
    else:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(_problem, todo, [decode] * len(todo)))
    _refuse_unreadable([(p, e) for p, e in zip(todo, problems, strict=True) if e is not None])
    low = [p for p in todo if str(p) in _low_bit_paths]
    if low:
        log.warning("%d of %d images are 16-bit grayscale whose values all fit in 12 bits "
                    "(at most 4095 of 65535, e.g. %s): read from the 16-bit range, as "
                    "every 16-bit file is, they use 17 of 256 grey levels; stretch them to "
                    "the 16-bit range (or write them as 8-bit files) before the run", len(low),
                    len(todo), low[0])


def _problem(path: Path, decode: bool) -> DataError | None:
    """:func:`_check`'s refusal of ``path``, returned: every image is checked, so that one
    refusal names all the unreadable ones (one at a time, a set with several corrupt files
    took a first start, minutes of decoding on a large set, for each of them)."""
    try:
        _check(path, decode)
    except DataError as err:
        return err
    return None


def _refuse_unreadable(problems: list[tuple[Path, DataError]]) -> None:
    """One line for every unreadable image: the first one's reason, then the others' names."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0][1]
    others = [str(p) for p, _ in problems[1:]]
    shown = ", ".join(others[:5]) + (f", ... ({len(others) - 5} more)" if len(others) > 5 else "")
    raise DataError(f"{problems[0][1]}; and {len(others)} more image file(s) could not be "
                    f"read: {shown}")


def _check(path: Path, decode: bool) -> None:
    if decode and not _state["full"]:
        decode_rgb(path)
        return
    try:
        with Image.open(path):  # the header alone
            pass
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None


def _keep(key: str, pixels: np.ndarray) -> None:
    """Hold ``pixels`` while the budget allows (under ``_lock``)."""
    if _state["bytes"] + pixels.nbytes <= cache_budget():
        _cache[key] = pixels
        _state["bytes"] += pixels.nbytes
    elif not _state["full"]:
        _state["full"] = True
        log.info("decoded images fill the %.1f GB cache (PIPELINE_DECODE_CACHE_GB): the rest "
                 "are decoded from disk each time they are read", cache_budget() / 2**30)


def clear_cache() -> None:
    """Forget every decoded image (tests; a process that moves to other data)."""
    _cache.clear()
    _low_bit_paths.clear()
    _state.update(bytes=0, full=False)
