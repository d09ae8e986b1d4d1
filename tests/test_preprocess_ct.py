"""Radiology preprocessing: 16-bit grayscale into prepare_for_model, and CT multi-window rendering."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from radsearch.reading.pixels import percentile_window
from radsearch.reading.prepare import (
    CT_WINDOWS,
    CtWindow,
    prepare_channels_for_model,
    prepare_for_model,
    render_ct_windows,
)


@pytest.fixture(scope="module")
def ct_small() -> tuple[np.ndarray, np.ndarray]:
    """pydicom's CT_small.dcm: the stored int16 values and their Hounsfield units (-896..1167)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = ds.pixel_array
    return stored, apply_modality_lut(stored, ds)


def test_16_bit_input_is_percentile_windowed(ct_small: tuple[np.ndarray, np.ndarray]) -> None:
    stored, _ = ct_small
    assert stored.dtype == np.int16
    out = prepare_for_model(stored, 224)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    expected = prepare_for_model(percentile_window(stored.astype(np.float32)), 224)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255  # the window spans the full 8-bit range


def test_unsigned_16_bit_ramp_keeps_order_aspect_and_padding() -> None:
    ramp = np.tile(np.linspace(0, 4095, 200).astype(np.uint16), (100, 1))  # 12 bits stored in 16
    out = prepare_for_model(ramp, 100)
    assert out[:25].max() == 0 and out[75:].max() == 0  # 2:1 aspect -> 50 rows, centred
    row = out[50].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_ct_windows_follow_width_and_level(ct_small: tuple[np.ndarray, np.ndarray]) -> None:
    _, hu = ct_small
    channels = render_ct_windows(hu)
    assert channels.shape == (3, 128, 128) and channels.dtype == np.uint8
    assert [w.name for w in CT_WINDOWS] == ["lung", "mediastinum", "bone"]
    for channel, window in zip(channels, CT_WINDOWS):
        reference = np.clip((hu - (window.level - window.width / 2)) / window.width, 0, 1) * 255
        assert np.abs(channel.astype(float) - reference).max() <= 0.5 + 1e-6
    lung, mediastinum, bone = channels.astype(int)
    # Mediastinum (W350/L50): air and lung black, cortical bone white.
    assert np.all(mediastinum[hu <= -125] == 0) and np.all(mediastinum[hu >= 225] == 255)
    assert 0 < np.count_nonzero(mediastinum == 255) < hu.size
    # Lung (W1500/L-600): this slice's air (-896 HU) keeps detail instead of going black.
    assert lung.min() > 0 and np.all(lung[hu >= 150] == 255)
    # Bone (W2000/L500): the densest bone (1167 HU) is not yet white; soft tissue is dim.
    assert bone.max() < 255 and np.all(bone[hu <= -500] == 0)
    soft = (hu > -100) & (hu < 100)
    assert bone[soft].mean() < mediastinum[soft].mean()


def test_window_centres_map_to_mid_grey() -> None:
    hu = np.array([[-600.0, 50.0, 500.0, -2000.0, 4000.0, np.nan]])
    lung, mediastinum, bone = render_ct_windows(hu)
    assert lung.tolist() == [[128, 238, 255, 0, 255, 0]]  # 50 HU: 1400 / 1500 * 255
    assert mediastinum[0, 1] == 128 and bone[0, 2] == 128
    single = render_ct_windows(hu, [CtWindow("brain", 80.0, 40.0)])
    # W80/L40: -600 HU black, 50 HU -> 50 / 80 * 255.
    assert single.shape == (1, 1, 6) and single[0, 0, :2].tolist() == [0, 159]


def test_ct_channels_are_prepared_like_single_images(ct_small: tuple[np.ndarray, np.ndarray]) -> None:
    _, hu = ct_small
    channels = render_ct_windows(hu[:, :64])  # 128 x 64: padded left and right
    out = prepare_channels_for_model(channels, 96)
    assert out.shape == (3, 96, 96) and out.dtype == np.uint8
    for prepared, channel in zip(out, channels):
        np.testing.assert_array_equal(prepared, prepare_for_model(channel, 96))
    assert out[:, :, :24].max() == 0 and out[:, :, 72:].max() == 0


@pytest.mark.parametrize(
    ("hu", "windows"),
    [(np.zeros((2, 2, 2)), CT_WINDOWS), (np.zeros((0, 4)), CT_WINDOWS), (np.zeros((4, 4)), []),
     (np.zeros((4, 4)), [CtWindow("flat", 0.0, 0.0)])],
)
def test_bad_ct_input_is_refused(hu: np.ndarray, windows: list[CtWindow]) -> None:
    with pytest.raises(ValueError):
        render_ct_windows(hu, windows)
