"""Decoding image files to 8-bit RGB: every PIL mode a competition may ship."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data import decoded


@pytest.fixture(autouse=True)
def _fresh_cache():
    decoded.clear_cache()
    yield
    decoded.clear_cache()


@pytest.mark.parametrize(("mode", "scale", "suffix"), [
    ("I;16", 257, ".png"),  # a 16-bit grayscale PNG (X-rays, microscopy)
    ("I", 257, ".tiff"),  # 32-bit integers holding 16-bit values
])
def test_high_bit_depth_grayscale_keeps_its_contrast(tmp_path, mode, scale, suffix):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / f"x{suffix}"
    dtype = np.uint16 if mode == "I;16" else np.int32
    Image.fromarray(gray.astype(dtype) * scale).save(path)
    assert Image.open(path).mode == mode
    pixels = decoded.decode_rgb(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(pixels[..., 0], gray)  # not clipped to 255
    np.testing.assert_array_equal(pixels[..., 2], gray)
