"""prepare_for_model: longest side to size, aspect kept, centred on black."""

from __future__ import annotations

import numpy as np
import pytest

from radsearch.reading import prepare_for_model


def test_wide_image_is_centred_vertically() -> None:
    out = prepare_for_model(np.ones((50, 200), np.float32), 224)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    rows = np.flatnonzero(out.max(axis=1))
    assert (rows[0], rows[-1]) == (84, 139)  # 56 rows of image, 84 black above and below
    assert out[84:140].min() == 255


def test_tall_image_is_centred_horizontally() -> None:
    out = prepare_for_model(np.full((300, 100), 128, np.uint8), 150)
    cols = np.flatnonzero(out.max(axis=0))
    assert (cols[0], cols[-1]) == (50, 99)
    assert out[:, 50:100].min() == 128 and out[:, 50:100].max() == 128


def test_small_image_is_upscaled_to_size() -> None:
    out = prepare_for_model(np.full((10, 10), 0.5, np.float32), 64)
    assert out.shape == (64, 64) and np.all(out == 128)


def test_float_range_is_clipped_and_rounded() -> None:
    image = np.array([[-1.0, 0.0, 0.5, 1.0, 7.0, np.nan]], np.float32).repeat(6, axis=0)
    out = prepare_for_model(image, 6)
    assert out[0].tolist() == [0, 0, 128, 255, 255, 0]


def test_uint8_at_size_is_unchanged() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    assert np.array_equal(prepare_for_model(image, 32), image)


def test_shrinking_is_antialiased() -> None:
    checker = (np.indices((400, 400)).sum(axis=0) % 2).astype(np.float32)
    out = prepare_for_model(checker, 100)
    assert abs(int(out.mean()) - 128) <= 2 and out.std() < 5  # averaged, not aliased


@pytest.mark.parametrize("shape", [(3, 4, 3), (0, 5), (5,)])
def test_bad_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        prepare_for_model(np.zeros(shape, np.float32), 32)
