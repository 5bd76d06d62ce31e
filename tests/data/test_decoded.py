"""Decoding image files to 8-bit RGB: every PIL mode a competition may ship, and files PIL
cannot read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data import decoded
from pipeline.errors import DataError


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


def test_an_unreadable_image_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"<html>not an image</html>")
    with pytest.raises(DataError, match=r"broken\.png.*could not be read as an image") as err:
        decoded.decode_many([path])
    assert "\n" not in str(err.value)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:40])  # truncated: the header reads, the pixels do not
    with pytest.raises(DataError, match=r"good\.png"):
        decoded.decode_rgb(good)


def test_a_damaged_header_pil_refuses_with_a_value_error_is_a_data_error(tmp_path):
    # a BMP whose compression field says RLE for 24-bit pixels (one flipped byte): PIL
    # raises ValueError, not OSError, and the run ended in a traceback
    path = tmp_path / "damaged.bmp"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[30] = 1  # BI_RLE8
    path.write_bytes(bytes(data))
    for read in (decoded.decode_rgb, lambda p: decoded.check_images([p])):
        with pytest.raises(DataError, match=r"damaged\.bmp: could not be read as an image"):
            read(path)


@pytest.mark.parametrize(("orientation", "turn"), [
    (3, lambda a: np.rot90(a, 2)),  # upside down
    (6, lambda a: np.rot90(a, -1)),  # the camera held on its side: turn 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),  # mirrored (a front camera)
])
def test_a_photo_is_turned_as_its_exif_orientation_says(tmp_path, orientation, turn):
    stored = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)  # as the sensor wrote it
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / "photo.png"  # lossless, so the pixels compare exactly
    image.save(path, exif=exif)
    np.testing.assert_array_equal(decoded.decode_rgb(path), turn(stored))


def test_a_damaged_exif_block_still_turns_the_photo(tmp_path):
    # a tag of the wrong type reads, but ImageOps.exif_transpose writes the metadata back
    # after turning, and that raised struct.error: a traceback on one phone photo
    exif = (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02"  # big-endian TIFF, 2 tags
            b"\x01D\x00\x02\x00\x00\x00\x06\x00\x00\x00&"  # TileOffsets as text, at 38
            b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"  # Orientation 6
            b"\x00\x00\x00\x00Phone\x00")
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(path, exif=exif)
    assert decoded.decode_rgb(path).shape == (10, 6, 3)


def test_a_jpeg_without_orientation_is_read_as_stored(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(path)
    assert decoded.decode_rgb(path).shape == (6, 10, 3)


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.0, 1.0, (0, 255)),  # normalised pixels: scaled by 255 (PIL's conversion: all black)
    (0.0, 255.0, (0, 255)),  # 8-bit values stored as floats: kept
    (-1.0, 1.0, (0, 255)),  # any other range: the image's own minimum to maximum
    (0.0, 4000.0, (0, 255)),  # measurements (PIL's conversion: white above 255)
])
def test_a_float_tiff_is_scaled_to_8_bits_not_clipped(tmp_path, low, high, expected):
    ramp = np.linspace(low, high, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "float.tiff"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "F"
    pixels = decoded.decode_rgb(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8, 3)
    assert (pixels.min(), pixels.max()) == expected
    assert (np.diff(pixels[..., 0].ravel().astype(int)) >= 0).all()  # the ramp's order kept
    assert len(np.unique(pixels)) > 50  # its contrast too


def test_a_float_tiff_reads_nan_as_zero(tmp_path):
    values = np.full((4, 4), 0.5, np.float32)
    values[0, 0], values[0, 1] = np.nan, np.inf
    path = tmp_path / "nan.tiff"
    Image.fromarray(values).save(path)
    pixels = decoded.decode_rgb(path)[..., 0]
    assert pixels[0, 0] == pixels[0, 1] == 0 and pixels[1, 1] == 128


def _images(folder, n: int) -> list:
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        pixels = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        pixels[0, 0] = i
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _cut(path) -> None:
    """Cut ``path``'s pixel data short: its header still reads."""
    path.write_bytes(path.read_bytes()[:400])
    with Image.open(path) as img:
        assert img.size == (16, 16)


@pytest.mark.parametrize("n", [3, 40])  # one by one, and by the pool
def test_checked_images_are_decoded_once_for_the_run(tmp_path, monkeypatch, n):
    paths = _images(tmp_path, n)
    opened = []
    real_open = decoded.Image.open
    monkeypatch.setattr(decoded.Image, "open", lambda p: opened.append(p) or real_open(p))
    decoded.check_images(paths + paths[:2])
    assert sorted(map(str, opened)) == sorted(map(str, paths))  # each once
    pixels = decoded.decode_many(paths)  # the run's first read: from the cache
    assert len(opened) == n and [int(p[0, 0, 0]) for p in pixels] == list(range(n))


def test_checking_images_finds_the_unreadable_one(tmp_path):
    paths = _images(tmp_path, 40)
    _cut(paths[17])
    with pytest.raises(DataError, match=r"17\.png: could not be read as an image") as err:
        decoded.check_images(paths)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("full", [False, True])
def test_checking_without_decoding_opens_headers_only(tmp_path, monkeypatch, full):
    # the images read by other processes (decode=False), or more than the cache holds
    if full:
        monkeypatch.setenv("PIPELINE_DECODE_CACHE_GB", "0")
    paths = _images(tmp_path, 3)
    _cut(paths[1])  # found at its first read instead
    decoded.check_images(paths, decode=full)
    assert decoded._state["bytes"] == 0  # nothing decoded was kept
    paths[2].write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"2\.png: could not be read as an image"):
        decoded.check_images(paths, decode=full)


@pytest.mark.parametrize("decode", [True, False])
def test_an_image_past_pils_pixel_limit_is_a_data_error(tmp_path, monkeypatch, decode):
    # PIL refuses more than 2 x Image.MAX_IMAGE_PIXELS with an error that is no OSError: it
    # ended the run in a traceback
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "slide.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"slide\.png: could not be read as an image \(Image "
                       r"size \(256 pixels\) exceeds limit") as err:
        decoded.check_images([path], decode=decode)
    assert "\n" not in str(err.value)


def test_an_image_with_transparency_is_laid_over_white(tmp_path):
    # dropping the alpha channel kept the colour under transparent pixels: a black glyph
    # drawn in its alpha channel alone (icons, characters) read as an all-black image
    alpha = np.zeros((4, 4), np.uint8)
    alpha[1:3, 1:3] = 255  # the glyph
    alpha[0, 0] = 128  # a half-transparent edge
    black = np.zeros((4, 4), np.uint8)
    rgba = np.dstack([black + 200, black, black, alpha])  # a red glyph on transparency
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([black, alpha])).convert("LA").save(tmp_path / "la.png")
    pixels = decoded.decode_rgb(tmp_path / "rgba.png")
    assert pixels[1, 1].tolist() == [200, 0, 0] and pixels[3, 3].tolist() == [255, 255, 255]
    assert pixels[0, 0].tolist() == [227, 127, 127]  # blended half-way
    gray = decoded.decode_rgb(tmp_path / "la.png")
    assert gray[1, 1].tolist() == [0, 0, 0] and gray[3, 3].tolist() == [255, 255, 255]


def test_a_palette_image_with_a_transparent_colour_is_laid_over_white(tmp_path):
    index = np.zeros((4, 4), np.uint8)
    index[1:3, 1:3] = 1
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0, 0, 0, 255])  # 0: black (transparent), 1: blue
    image.save(tmp_path / "p.png", transparency=0)
    pixels = decoded.decode_rgb(tmp_path / "p.png")
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[1, 1].tolist() == [0, 0, 255]


def test_an_opaque_image_with_an_alpha_channel_keeps_its_colours(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((6, 6), 255, np.uint8)])).save(tmp_path / "o.png")
    np.testing.assert_array_equal(decoded.decode_rgb(tmp_path / "o.png"), rgb)


def test_an_image_transparent_everywhere_keeps_its_colours(tmp_path):
    # laid over white, an alpha channel left at 0 by its exporter made every image of a set
    # one white square: the model saw nothing and scored chance
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.zeros((6, 6), np.uint8)])).save(tmp_path / "t.png")
    np.testing.assert_array_equal(decoded.decode_rgb(tmp_path / "t.png"), rgb)
    gray = rgb[:, :, 0]
    Image.fromarray(np.dstack([gray, 0 * gray])).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(decoded.decode_rgb(tmp_path / "la.png"), np.dstack([gray] * 3))


def test_sixteen_bit_images_of_twelve_bit_values_are_named_in_a_warning(tmp_path, caplog):
    # 12-bit values read from the 16-bit range span 17 grey levels: a probe's such digits
    # among 13 other formats scored held-out accuracy 0.62, full-range 16-bit ones 0.94
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp * 64).save(tmp_path / "a.png")  # 0..4032: 12 bits
    Image.fromarray(ramp * 16).save(tmp_path / "b.png")  # 0..1008: 10 bits
    Image.fromarray(ramp * 1040).save(tmp_path / "full.png")  # 0..65520
    Image.fromarray(ramp.astype(np.uint8)).save(tmp_path / "eight.png")  # 8-bit: no matter
    paths = [tmp_path / n for n in ("a.png", "b.png", "full.png", "eight.png")]
    with caplog.at_level("WARNING"):
        decoded.check_images(paths)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("2 of 4 images are 16-bit grayscale whose "
                                                 "values all fit in 12 bits"), said
    assert str(tmp_path / "a.png") in said[0]
    assert decoded.decode_rgb(paths[0]).max() == 16  # still read from the 16-bit range
    caplog.clear()
    with caplog.at_level("WARNING"):
        decoded.check_images(paths[2:])
    assert not caplog.records


@pytest.mark.parametrize("n", [3, 40])  # one by one, and by the pool
def test_one_refusal_names_every_unreadable_image(tmp_path, n):
    # a set with several corrupt files was refused one file per first start: on a large set,
    # minutes of decoding before each next name
    paths = _images(tmp_path, n)
    broken = [paths[0], paths[2]]
    for path in broken:
        _cut(path)
    with pytest.raises(DataError) as err:
        decoded.check_images(paths)
    message = str(err.value)
    assert message.startswith(f"{paths[0]}: could not be read as an image (")
    assert message.endswith(f"; and 1 more image file(s) could not be read: {paths[2]}")
    assert "\n" not in message


def test_the_refusal_of_many_unreadable_images_shows_a_few_names(tmp_path):
    paths = _images(tmp_path, 40)
    for path in paths[:12]:
        path.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        decoded.check_images(paths)
    tail = str(err.value).split("; and ")[1]
    assert tail.startswith("11 more image file(s) could not be read: ")
    assert tail.endswith(f"{paths[5]}, ... (6 more)")
