"""PNG and JPEG files through PIL: modes, EXIF orientation, limits, damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reading_helpers import max_abs_diff, read

from radsearch.reading import ReadError, prepare_for_model
from radsearch.reading.types import METADATA_KEYS


def _gradient(height: int = 120, width: int = 200) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width), (height, 1)).astype(np.uint8)


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_gray_png(tmp_path: Path) -> None:
    arr = _gradient()
    result = read(_save(Image.fromarray(arr), tmp_path / "a.png"))
    assert result.kind == "png" and len(result.frames) == 1
    assert set(result.metadata) == set(METADATA_KEYS)
    meta = result.metadata
    assert (meta["rows"], meta["columns"], meta["n_frames"]) == (120, 200, 1)
    assert result.study_uid_hash is None and result.patient_hash is None
    frame = result.frames[0]
    assert frame.slice_position is None and frame.instance_number is None
    assert np.array_equal(frame.pixels, prepare_for_model(arr, 224))


def test_16_bit_png_gets_a_percentile_window(tmp_path: Path) -> None:
    arr = (np.tile(np.linspace(1000, 3000, 200), (100, 1))).astype(np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    low, high = np.percentile(arr, (0.5, 99.5))
    expected = prepare_for_model(np.clip((arr - low) / (high - low), 0, 1), 224)
    assert max_abs_diff(read(path).frames[0].pixels, expected) <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1"])
def test_colour_and_other_modes_become_gray(tmp_path: Path, mode: str) -> None:
    rgb = np.stack([_gradient(), _gradient()[:, ::-1], np.full((120, 200), 90, np.uint8)], axis=-1)
    image = Image.fromarray(rgb).convert(mode)
    result = read(_save(image, tmp_path / "c.png"))
    gray = image.convert("RGBA" if mode == "P" else mode).convert("L")
    expected = prepare_for_model(np.asarray(gray), 224)
    assert max_abs_diff(result.frames[0].pixels, expected) <= 1


def test_jpeg_colour(tmp_path: Path) -> None:
    rgb = np.stack([_gradient(), _gradient()[:, ::-1], np.full((120, 200), 90, np.uint8)], axis=-1)
    path = _save(Image.fromarray(rgb), tmp_path / "c.jpg", quality=95)
    result = read(path)
    assert result.kind == "jpeg"
    expected = prepare_for_model(np.asarray(Image.open(path).convert("L")), 224)
    assert np.abs(result.frames[0].pixels.astype(int) - expected.astype(int)).mean() < 1.5


def test_large_jpeg_is_drafted_but_keeps_the_size_and_look(tmp_path: Path) -> None:
    arr = np.kron(_gradient(120, 200), np.ones((10, 10), np.uint8))  # 1200 x 2000
    path = _save(Image.fromarray(arr), tmp_path / "big.jpg", quality=95)
    pixels = read(path).frames[0].pixels
    assert np.abs(pixels.astype(int) - prepare_for_model(arr, 224).astype(int)).mean() < 2


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((100, 200), np.uint8)
    arr[:, 100:] = 255  # left black, right white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(Image.fromarray(arr), tmp_path / "rotated.jpg", exif=exif, quality=95)
    result = read(path)
    assert (result.metadata["rows"], result.metadata["columns"]) == (200, 100)
    pixels = result.frames[0].pixels  # displayed 100 wide x 200 high: black on top, white below
    assert pixels[20, 112] < 30 and pixels[200, 112] > 225
    assert pixels[:, :40].max() == 0 and pixels[:, -40:].max() == 0  # side padding


def test_decompression_bomb_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.fromarray(_gradient()), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ReadError, match="decompression-bomb"):
        read(path)


def test_max_pixels(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_gradient()), tmp_path / "a.png")
    with pytest.raises(ReadError, match=r"declared image size 200x120 = 24000 pixels is too large"):
        read(path, max_pixels=20000)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_images(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8)
    data = _save(Image.fromarray(noise), tmp_path / f"full.{suffix}").read_bytes()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="truncated") as info:
        read(path)
    assert "\n" not in str(info.value)


def test_png_signature_with_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ReadError, match="PNG"):
        read(path)
