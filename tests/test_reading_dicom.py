"""The DICOM pixel pipeline on real files: syntaxes, LUTs, photometrics, frames, geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut
from reading_helpers import SALT, edited_copy, max_abs_diff, pixels, pydicom_file, read

from radsearch.reading import ReadResult, prepare_for_model, render_dicom_frames
from radsearch.reading.types import METADATA_KEYS


def _luma(rgb: np.ndarray, max_value: float) -> np.ndarray:
    return (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / max_value


def test_ct_small_result_shape_and_metadata() -> None:
    result = read(pydicom_file("CT_small.dcm"))
    assert isinstance(result, ReadResult)
    assert result.kind == "dicom" and result.report_text is None and result.warnings == []
    [frame] = result.frames
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (224, 224)
    assert frame.frame_index == 0 and frame.instance_number == 1
    assert frame.pixels.std() > 20  # a real, windowed image
    assert set(result.metadata) == set(METADATA_KEYS)
    meta = result.metadata
    assert meta["modality"] == "CT" and meta["rows"] == 128 and meta["columns"] == 128
    assert meta["n_frames"] == 1 and meta["photometric"] == "MONOCHROME2"
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["sop_class"] == "CT Image Storage" and meta["view"] == "axial"
    assert meta["study_date"] == "2004-01-19" and meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert all(len(h) == 32 for h in (result.study_uid_hash, result.series_uid_hash,
                                       result.instance_uid_hash, result.patient_hash))


def test_image_size_is_honoured() -> None:
    assert pixels(pydicom_file("CT_small.dcm"), image_size=96).shape == (96, 96)


def test_ct_rescale_then_percentile_window() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = np.percentile(hu, (0.5, 99.5))
    expected = np.clip((hu - low) / (high - low), 0, 1)
    [rendered] = render_dicom_frames(ds)
    assert rendered.dtype == np.float32
    assert np.abs(rendered - expected).max() < 1e-3


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_center_width(function: str) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = [40, 500], [400, 2000], function
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = 40.0, 400.0  # the first window
    if function == "LINEAR":
        expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    elif function == "LINEAR_EXACT":
        expected = np.clip((hu - c) / w + 0.5, 0, 1)
    else:
        expected = 1 / (1 + np.exp(-4 * (hu - c) / w))
    [rendered] = render_dicom_frames(ds)
    assert np.abs(rendered - expected).max() < 1e-4


def test_voi_lut_sequence_is_used() -> None:
    ds = pydicom.dcmread(pydicom_file("vlut_04.dcm"))
    item = ds.VOILUTSequence[0]
    lut = np.asarray(item.LUTData, dtype=np.float64)
    first = int(item.LUTDescriptor[1])
    expected = lut[np.clip(ds.pixel_array.astype(int) - first, 0, lut.size - 1)]
    expected = (expected - lut.min()) / (lut.max() - lut.min())
    [rendered] = render_dicom_frames(ds)
    assert np.abs(rendered - expected).max() < 1e-6


def test_modality_lut_sequence_is_used() -> None:
    ds = pydicom.dcmread(pydicom_file("mlut_18.dcm"))
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    low, high = np.percentile(values, (0.5, 99.5))
    expected = np.clip((values - low) / (high - low), 0, 1)
    [rendered] = render_dicom_frames(ds)
    assert np.abs(rendered - expected).max() < 1e-3


MR_VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",  # pixel data with excess trailing bytes
]


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_mr_small_transfer_syntaxes_render_the_same(name: str) -> None:
    reference = pixels(pydicom_file("MR_small.dcm"))
    assert max_abs_diff(pixels(pydicom_file(name)), reference) <= 1


@pytest.mark.parametrize(
    ("compressed", "uncompressed", "tolerance"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm", 1),  # JPEG 2000 lossless
        ("693_J2KI.dcm", "693_UNCI.dcm", 1),
        ("JPEG2000.dcm", "JPEG2000_UNC.dcm", 1),
        ("US1_J2KR.dcm", "US1_UNCR.dcm", 2),  # YBR_RCT colour
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", 1),  # JPEG lossless RGB
        ("SC_rgb_rle.dcm", "SC_rgb.dcm", 0),
        ("SC_rgb_rle_16bit.dcm", "SC_rgb.dcm", 1),
        ("SC_rgb_32bit.dcm", "SC_rgb.dcm", 1),
        ("SC_rgb_expb.dcm", "SC_rgb.dcm", 0),
    ],
)
def test_compressed_matches_uncompressed(
    compressed: str, uncompressed: str, tolerance: int
) -> None:
    decoded = pixels(pydicom_file(compressed))
    assert max_abs_diff(decoded, pixels(pydicom_file(uncompressed))) <= tolerance


@pytest.mark.parametrize(
    ("lossy", "reference"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm"),  # JPEG baseline, YBR_FULL
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb.dcm"),  # JPEG baseline, YBR_FULL_422
        ("JPGExtended.dcm", "JPEG-LL.dcm"),  # JPEG extended 12 bit vs JPEG lossless
        ("SC_rgb_jls_lossy_line.dcm", "SC_rgb.dcm"),  # JPEG-LS near lossless
        ("MR2_J2KI.dcm", "MR2_UNCI.dcm"),  # JPEG 2000 lossy
    ],
)
def test_lossy_syntaxes_decode_close_to_reference(lossy: str, reference: str) -> None:
    a, b = pixels(pydicom_file(lossy)), pixels(pydicom_file(reference))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4


def test_rgb_becomes_luminance() -> None:
    ds = pydicom.dcmread(pydicom_file("SC_rgb.dcm"))
    expected = prepare_for_model(_luma(ds.pixel_array, 255.0), 224)
    assert max_abs_diff(pixels(pydicom_file("SC_rgb.dcm")), expected) <= 1


def test_ybr_multiframe_ultrasound_becomes_luminance() -> None:
    path = pydicom_file("examples_ybr_color.dcm")
    result = read(path)
    assert len(result.frames) == 30 and result.metadata["n_frames"] == 30
    assert [f.frame_index for f in result.frames] == list(range(30))
    ds = pydicom.dcmread(path)
    rgb = ds.pixel_array  # pydicom converts YBR_FULL_422 to RGB
    for index in (0, 29):
        expected = prepare_for_model(_luma(rgb[index], 255.0), 224)
        assert max_abs_diff(result.frames[index].pixels, expected) <= 1


@pytest.mark.parametrize(
    "name", ["examples_palette.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A_rle.dcm"]
)
def test_palette_color_applied_then_luminance(name: str) -> None:
    path = pydicom_file(name)
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds)
    expected = prepare_for_model(_luma(rgb, float(np.iinfo(rgb.dtype).max)), 224)
    assert max_abs_diff(pixels(path), expected) <= 1


def test_two_frame_rle() -> None:
    result = read(pydicom_file("SC_rgb_rle_2frame.dcm"))
    assert len(result.frames) == 2
    assert [f.frame_index for f in result.frames] == [0, 1]
    assert max_abs_diff(result.frames[0].pixels, result.frames[1].pixels) > 0


def test_enhanced_mr_all_frames_and_sampling() -> None:
    path = pydicom_file("emri_small.dcm")
    full = read(path)
    assert len(full.frames) == 10 and full.warnings == []
    sampled = read(path, max_frames=4)
    assert [f.frame_index for f in sampled.frames] == [0, 3, 6, 9]
    assert sampled.warnings == ["sampled 4 of 10 frames evenly"]
    for frame in sampled.frames:
        assert np.array_equal(frame.pixels, full.frames[frame.frame_index].pixels)


def test_enhanced_mr_variants_render_the_same() -> None:
    reference = read(pydicom_file("emri_small.dcm")).frames
    for name in ["emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                 "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"]:
        frames = read(pydicom_file(name)).frames
        assert len(frames) == len(reference)
        for a, b in zip(frames, reference):
            assert max_abs_diff(a.pixels, b.pixels) <= 1


def test_enhanced_ct_per_frame_positions_and_functional_group_window() -> None:
    path = pydicom_file("eCT_Supplemental.dcm")
    result = read(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # Orientation (-1,0,0 / 0,1,0): the normal is -z, so position = -z of each frame's IPP.
    z = [float(item.PlanePositionSequence[0].ImagePositionPatient[2])
         for item in ds.PerFrameFunctionalGroupsSequence]
    assert [f.slice_position for f in result.frames] == pytest.approx([-v for v in z])
    # Rescale and window come from the shared functional groups (brain window, -1024 intercept).
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array[0].astype(np.float64) - 1024.0
    expected = prepare_for_model(np.clip((hu - 48.5) / 101.0 + 0.5, 0, 1), 224)
    assert max_abs_diff(result.frames[0].pixels, expected) <= 1


def _as_monochrome1(ds: pydicom.Dataset) -> None:
    ds.PhotometricInterpretation = "MONOCHROME1"


def test_monochrome1_is_inverted_after_windowing(tmp_path: Path) -> None:
    normal = pixels(pydicom_file("MR_small.dcm"))
    inverted = pixels(edited_copy("MR_small.dcm", tmp_path, _as_monochrome1))
    assert np.abs(normal.astype(int) + inverted.astype(int) - 255).max() <= 1


def test_real_monochrome1_radiograph() -> None:
    path = pydicom_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    as_stored = render_dicom_frames(ds)[0]
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.abs(as_stored + render_dicom_frames(ds)[0] - 1.0).max() < 1e-6
    result = read(path)
    assert result.metadata["modality"] == "CR" and result.metadata["view"] == "R AP"


def _with_padding(ds: pydicom.Dataset, value: int, limit: int | None = None) -> np.ndarray:
    arr = ds.pixel_array.copy()
    pad = np.zeros(arr.shape, bool)
    pad[:40, :] = True  # a large band: it would dominate an unmasked percentile window
    arr[pad] = np.linspace(value, value if limit is None else limit, pad.sum()).astype(arr.dtype)
    ds.PixelData = arr.tobytes()
    ds.PixelPaddingValue = value
    if limit is not None:
        ds.PixelPaddingRangeLimit = limit
    return pad


@pytest.mark.parametrize("limit", [None, -29000])
def test_pixel_padding_masked_from_window_and_black(limit: int | None) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    original = ds.pixel_array.astype(np.float64)
    pad = _with_padding(ds, -30000, limit)
    hu = original * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = np.percentile(hu[~pad], (0.5, 99.5))
    expected = np.clip((hu - low) / (high - low), 0, 1)
    [rendered] = render_dicom_frames(ds)
    assert np.all(rendered[pad] == 0)
    assert np.abs(rendered[~pad] - expected[~pad]).max() < 1e-3


def test_signed_padding_written_as_unsigned_is_still_found() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # PixelRepresentation 1
    original = ds.pixel_array.astype(np.float64)
    pad = _with_padding(ds, -30000)
    ds["PixelPaddingValue"].VR = "US"
    ds.PixelPaddingValue = 65536 - 30000  # how many writers store a signed padding value
    hu = original * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = np.percentile(hu[~pad], (0.5, 99.5))
    [rendered] = render_dicom_frames(ds)
    assert np.all(rendered[pad] == 0)
    assert np.abs(rendered[~pad] - np.clip((hu - low) / (high - low), 0, 1)[~pad]).max() < 1e-3


def test_padding_on_monochrome1_still_black() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    pad = _with_padding(ds, -30000)
    ds.PhotometricInterpretation = "MONOCHROME1"
    [rendered] = render_dicom_frames(ds)
    assert np.all(rendered[pad] == 0) and rendered[~pad].max() > 0.9


def test_file_without_meta_header_reads() -> None:
    result = read(pydicom_file("OT-PAL-8-face.dcm"))  # implicit VR, no preamble, no file meta
    assert result.metadata["photometric"] == "PALETTE COLOR" and len(result.frames) == 1
    assert result.frames[0].pixels.std() > 20


def test_no_meta_file_reads_like_the_original() -> None:
    # pydicom's no_meta.dcm is CT_small.dcm without preamble and file meta (plus one stray byte).
    result = read(pydicom_file("no_meta.dcm"))
    assert result.metadata["transfer_syntax"] == "Explicit VR Little Endian"
    assert np.array_equal(result.frames[0].pixels, pixels(pydicom_file("CT_small.dcm")))


def test_same_salt_same_hashes_other_salt_other_hashes() -> None:
    path = pydicom_file("MR_small.dcm")
    a, b, c = read(path), read(path), read(path, salt=SALT + "-other")
    assert a.study_uid_hash == b.study_uid_hash and a.patient_hash == b.patient_hash
    assert a.study_uid_hash != c.study_uid_hash and a.patient_hash != c.patient_hash
    assert a.study_uid_hash != a.series_uid_hash != a.instance_uid_hash
