"""Robust image loading: every odd image becomes 8-bit RGB, or is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvtransfer.data.images import ImageReadError, check_image, load_rgb


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L").save(tmp_path / "g.png")
    image = load_rgb(tmp_path / "g.png")
    assert image.mode == "RGB" and image.size == (7, 5)
    assert np.asarray(image)[0, 0].tolist() == [100, 100, 100]


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 255  # red, fully transparent except the first pixel
    pixels[0, 0, 3] = 255
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    array = np.asarray(load_rgb(tmp_path / "a.png"))
    assert array[0, 0].tolist() == [255, 0, 0]
    assert array[1, 1].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 3), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(load_rgb(tmp_path / "p.png"))[0, 0].tolist() == [255, 255, 255]


def test_16bit_is_stretched_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)  # 12-bit data in a 16-bit file
    Image.fromarray(values).save(tmp_path / "x.png")
    array = np.asarray(load_rgb(tmp_path / "x.png"))
    assert array.dtype == np.uint8
    assert array[0, 0, 0] == 0 and array[1, 1, 0] == 255 and array[0, 1, 0] == round(1000 * 255 / 4000)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red, green, blue = np.asarray(load_rgb(tmp_path / "c.jpg"))[3, 3].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 4), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "r.jpg").size == (4, 8)


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_rgb(tmp_path / "big.png", max_pixels=5000)
    assert "decompression bomb" in check_image(tmp_path / "big.png", max_pixels=5000)


def test_corrupt_and_non_images_get_reasons(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert "extension" in check_image(tmp_path / "notes.txt")
    assert check_image(tmp_path / "broken.png") is not None
    assert check_image(tmp_path / "cut.jpg") is not None
