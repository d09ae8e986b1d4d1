"""NIfTI volumes read as series: the same slices, positions and pixels as the DICOM series they
were converted from, whatever the voxel order; scaling, CT, 4D; hostile headers refused in one line.
"""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_helpers import ORIENTATIONS, VOXEL_ORDERS, dicom_series, nifti_from_dicom
from reading_helpers import read

from radsearch.previews import frame_values
from radsearch.reading import CT_WINDOWS, ReadError, detect_kind
from radsearch.reading.nifti_geometry import slice_layout


def _by_position(frames: list) -> list:
    return sorted(frames, key=lambda frame: frame.slice_position)


def _dicom_frames(paths: list[Path], **kwargs: object) -> list:
    return _by_position([read(path, **kwargs).frames[0] for path in paths])


@pytest.mark.parametrize("voxel_order", VOXEL_ORDERS, ids=["as-converted", "RAS", "IPR"])
@pytest.mark.parametrize("plane", sorted(ORIENTATIONS))
def test_slices_look_and_lie_like_the_dicom_series(tmp_path: Path, plane: str,
                                                   voxel_order: tuple[str, ...] | None) -> None:
    series = dicom_series(tmp_path, plane)
    volume = nifti_from_dicom(series, tmp_path / "volume.nii.gz", voxel_order)

    result = read(volume)

    assert result.kind == "nifti"
    assert result.metadata["view"] == plane
    assert len(result.frames) == len(series)
    for nifti, dicom in zip(_by_position(result.frames), _dicom_frames(series), strict=True):
        assert nifti.slice_position == pytest.approx(dicom.slice_position, abs=1e-3)
        np.testing.assert_array_equal(nifti.pixels, dicom.pixels)


def test_scaling_applied_and_hounsfield_files_read_alike(tmp_path: Path) -> None:
    series = dicom_series(tmp_path, "axial")
    scaled = read(nifti_from_dicom(series, tmp_path / "scaled.nii.gz"))
    stored_hu = read(nifti_from_dicom(series, tmp_path / "hu.nii", scaled=False))
    for a, b in zip(scaled.frames, stored_hu.frames, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_ct_windows_render_a_ct_volume_as_its_dicom_slices(tmp_path: Path) -> None:
    series = dicom_series(tmp_path, "axial")
    volume = nifti_from_dicom(series, tmp_path / "ct.nii.gz", ("R", "A", "S"))
    (tmp_path / "ct.json").write_text(json.dumps({"Modality": "CT", "BodyPartExamined": "CHEST"}))

    result = read(volume, ct_windows=CT_WINDOWS)

    assert result.metadata["modality"] == "CT"
    assert result.metadata["body_part"] == "CHEST"
    dicom = _dicom_frames(series, ct_windows=CT_WINDOWS)
    for nifti, frame in zip(_by_position(result.frames), dicom, strict=True):
        assert nifti.pixels.shape == (3, 224, 224)
        np.testing.assert_array_equal(nifti.pixels, frame.pixels)


def test_a_volume_in_hounsfield_units_is_ct_without_a_sidecar(tmp_path: Path) -> None:
    hu = np.full((64, 64, 4), -1000, dtype=np.int16)  # air around a body
    hu[16:48, 16:48] = 40
    hu[28:36, 28:36] = 700
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii")
    mr = np.random.default_rng(0).integers(0, 1200, (64, 64, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(mr, np.eye(4)), tmp_path / "mr.nii")
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "labelled.nii")
    (tmp_path / "labelled.json").write_text(json.dumps({"Modality": "MR"}))

    assert read(tmp_path / "ct.nii").metadata["modality"] == "CT"
    assert read(tmp_path / "ct.nii", ct_windows=CT_WINDOWS).frames[0].pixels.shape == (3, 224, 224)
    assert read(tmp_path / "mr.nii").metadata["modality"] is None
    assert read(tmp_path / "mr.nii", ct_windows=CT_WINDOWS).frames[0].pixels.shape == (224, 224)
    assert read(tmp_path / "labelled.nii").metadata["modality"] == "MR"  # the sidecar decides


@pytest.mark.parametrize("plane", sorted(ORIENTATIONS))
def test_a_viewer_gets_each_slice_in_hounsfield_units(tmp_path: Path, plane: str) -> None:
    series = dicom_series(tmp_path, plane)
    volume = nifti_from_dicom(series, tmp_path / "ct.nii.gz", ("I", "P", "R"))
    by_position = {round(frame.slice_position, 2): frame.frame_index
                   for frame in read(volume, image_size=8).frames}
    for path in series:
        dicom = frame_values(path)
        nifti = frame_values(volume, by_position[round(dicom.position, 2)])
        assert nifti.position == pytest.approx(dicom.position, abs=1e-3)
        np.testing.assert_array_equal(nifti.values, dicom.values)  # the same HU, the same way up
    assert frame_values(volume, 0).invert is False


@pytest.mark.parametrize("slice_dim", [0, 1, 2])
def test_a_slice_is_a_view_of_the_volume(slice_dim: int) -> None:
    # Never a copy of the whole volume per slice (np.take made one: quadratic in the slices).
    volume = np.zeros((6, 7, 8), dtype=np.int16, order="F")
    layout = slice_layout(np.diag([-1.0, 1.0, -1.0, 1.0]), volume.shape, slice_dim)
    assert layout.slice_axis == slice_dim
    assert np.shares_memory(layout.image(volume, 3), volume)


def test_4d_reads_the_first_volume(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (32, 32, 5, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), tmp_path / "bold.nii.gz")
    nib.save(nib.Nifti1Image(data[..., 0], np.diag([2.0, 2.0, 4.0, 1.0])), tmp_path / "first.nii")

    result = read(tmp_path / "bold.nii.gz")

    assert result.warnings == ["4D: read the first of 3 volumes"]
    first = read(tmp_path / "first.nii")
    assert [f.slice_position for f in result.frames] == [0.0, 4.0, 8.0, 12.0, 16.0]
    for a, b in zip(result.frames, first.frames, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_many_slices_are_sampled_like_dicom_frames(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 100, (16, 16, 40)).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "long.nii")
    result = read(tmp_path / "long.nii", max_frames=8)
    assert len(result.frames) == 8
    assert result.frames[-1].frame_index == 39
    assert "sampled 8 of 40 slices evenly" in result.warnings


def test_rgb_and_non_finite_values(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"][:4] = 255
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    floats = np.linspace(0, 1, 8 * 8 * 2, dtype=np.float32).reshape(8, 8, 2)
    floats[0, 0, 0], floats[1, 1, 0] = np.nan, np.inf
    nib.save(nib.Nifti1Image(floats, np.eye(4)), tmp_path / "float.nii")

    assert len(read(tmp_path / "rgb.nii", image_size=8).frames) == 2
    pixels = read(tmp_path / "float.nii", image_size=8).frames[0].pixels
    assert pixels.dtype == np.uint8


def test_detection_by_content(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 2), dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "b.nii.gz")
    big_endian = nib.Nifti1Image(data.astype(">i2"), np.eye(4))
    nib.save(big_endian, tmp_path / "c.nii")
    (tmp_path / "renamed").write_bytes((tmp_path / "b.nii.gz").read_bytes())
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"not an image" * 100))

    for name in ("a.nii", "b.nii.gz", "c.nii", "renamed"):
        assert detect_kind(tmp_path / name) == "nifti", name
        assert len(read(tmp_path / name).frames) == 2
    assert detect_kind(tmp_path / "text.gz") is None


def test_a_zero_vox_offset_means_right_after_the_header(tmp_path: Path) -> None:
    data = np.arange(10 * 10 * 10, dtype="<i2").reshape(10, 10, 10)
    (tmp_path / "zero.nii").write_bytes(_header(vox_offset=0) + data.tobytes(order="F"))
    (tmp_path / "right.nii").write_bytes(_header() + data.tobytes(order="F"))
    for a, b in zip(read(tmp_path / "zero.nii").frames, read(tmp_path / "right.nii").frames,
                    strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_a_nifti_pair_reads_its_image_file(tmp_path: Path) -> None:
    data = np.arange(4 * 4 * 3, dtype=np.int16).reshape(4, 4, 3)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), tmp_path / "pair.hdr")
    assert len(read(tmp_path / "pair.hdr").frames) == 3
    (tmp_path / "pair.img").unlink()
    assert _one_line_error(tmp_path / "pair.hdr") == (
        "header of a NIfTI pair without its image file pair.img")


# --- hostile files -------------------------------------------------------------------------------


def _one_line_error(path: Path) -> str:
    with pytest.raises(ReadError) as info:
        read(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def _error_and_peak_memory(path: Path) -> tuple[str, int]:
    tracemalloc.start()
    try:
        return _one_line_error(path), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _header(version: int = 1, **fields: object) -> bytes:
    """A valid header of a 10x10x10 int16 volume, with ``fields`` changed."""
    kind = nib.Nifti1Header if version == 1 else nib.Nifti2Header
    header = kind()
    header.set_data_shape((10, 10, 10))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352 if version == 1 else 544
    for name, value in fields.items():
        header[name] = value
    return header.binaryblock + b"\x00" * 4


@pytest.mark.parametrize("version, dims", [
    (1, [3, 32767, 32767, 32767, 1, 1, 1, 1]),
    (2, [3, 2**40, 2**40, 2**20, 1, 1, 1, 1]),
])
def test_absurd_dimensions_are_refused_before_allocating(tmp_path: Path, version: int,
                                                         dims: list[int]) -> None:
    path = tmp_path / "huge.nii"
    path.write_bytes(_header(version, dim=dims) + b"\x01" * 4096)
    message, peak = _error_and_peak_memory(path)
    assert message.startswith("declared volume size")
    assert peak < 16 * 2**20


def test_a_gzip_bomb_behind_a_far_vox_offset_is_inflated_in_small_steps(tmp_path: Path) -> None:
    # 60 MB of zeros compress to 60 kB: skipping to the offset must not hold them at once.
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as out:
        out.write(_header(vox_offset=60 * 2**20))
        for _ in range(60):
            out.write(bytes(2**20))
    message, peak = _error_and_peak_memory(path)
    assert message == "truncated NIfTI file: the image data needs 2000 bytes, 352 present"
    assert peak < 16 * 2**20


def test_a_small_gzip_declaring_a_large_volume_allocates_what_it_holds(tmp_path: Path) -> None:
    # 4000x4000x16 int16 is 512 MB, under the voxel limit; the stream holds 1 kB of it. Only
    # inflating tells, so the reader must not set the declared size aside first.
    path = tmp_path / "small.nii.gz"
    path.write_bytes(gzip.compress(_header(dim=[3, 4000, 4000, 16, 1, 1, 1, 1]) + bytes(1024)))
    message, peak = _error_and_peak_memory(path)
    assert message == "truncated NIfTI file: the image data needs 512000000 bytes, 1024 present"
    assert peak < 16 * 2**20


@pytest.mark.parametrize("name, content, expected", [
    ("header-only.nii", _header(), "truncated NIfTI file: the image data needs 2000 bytes from "
     "offset 352, 0 present"),
    ("far-offset.nii", _header(vox_offset=10**9), "invalid vox_offset 1000000000"),
    ("early-offset.nii", _header(vox_offset=100) + bytes(2000),
     "invalid vox_offset 100: the image data would overlap the 348-byte header"),
    ("no-dims.nii", _header(dim=[0, 1, 1, 1, 1, 1, 1, 1]), "invalid NIfTI dimension count"),
    ("negative.nii", _header(dim=[3, 10, -10, 10, 1, 1, 1, 1]), "invalid NIfTI dimensions"),
    ("complex.nii", _header(datatype=32) + bytes(8000), "unsupported NIfTI datatype code 32"),
    ("unknown-type.nii", _header(datatype=9999) + bytes(8000),
     "unsupported NIfTI datatype code 9999"),
])
def test_broken_headers_give_one_line(tmp_path: Path, name: str, content: bytes,
                                      expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    message, peak = _error_and_peak_memory(path)
    assert message.startswith(expected)
    assert peak < 16 * 2**20


def test_truncated_gzip(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 30000, (64, 64, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "whole.nii.gz")
    whole = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "cut-in-header.nii.gz").write_bytes(whole[:60])
    (tmp_path / "not-gzip.nii.gz").write_bytes(b"plain text, named as a volume")

    assert _one_line_error(tmp_path / "cut.nii.gz") == (
        "truncated gzip stream: it ends inside the image data")
    assert _one_line_error(tmp_path / "cut-in-header.nii.gz") == (
        "not a NIfTI file: truncated or damaged gzip stream before the end of the header")
    assert _one_line_error(tmp_path / "not-gzip.nii.gz") == (
        "not a NIfTI file: no NIfTI-1/NIfTI-2 header")


def test_corrupt_gzip_data(tmp_path: Path) -> None:
    data = np.random.default_rng(4).integers(0, 30000, (64, 64, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "volume.nii.gz")
    damaged = bytearray((tmp_path / "volume.nii.gz").read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(range(64))
    (tmp_path / "volume.nii.gz").write_bytes(bytes(damaged))
    assert _one_line_error(tmp_path / "volume.nii.gz").startswith("damaged gzip stream")


def test_degenerate_affine_still_reads(tmp_path: Path) -> None:
    # No qform, no sform, zero voxel sizes: no geometry, but the slices are there.
    data = np.random.default_rng(5).integers(0, 100, (10, 10, 10)).astype("<i2")
    path = tmp_path / "flat.nii"
    path.write_bytes(_header(pixdim=[1, 0, 0, 0, 0, 0, 0, 0]) + data.tobytes(order="F"))
    result = read(path)
    assert len(result.frames) == 10
    assert result.frames[0].slice_position is None
    assert result.metadata["view"] is None


def test_without_sform_or_qform_slices_are_spaced_but_no_plane_is_claimed(tmp_path: Path) -> None:
    data = np.random.default_rng(6).integers(0, 100, (10, 10, 10)).astype("<i2")
    path = tmp_path / "analyze-style.nii"
    path.write_bytes(_header(pixdim=[1, 0.5, 0.5, 3, 0, 0, 0, 0], qform_code=0, sform_code=0)
                     + data.tobytes(order="F"))
    result = read(path)
    assert result.metadata["view"] is None
    assert np.diff([f.slice_position for f in result.frames]) == pytest.approx([3.0] * 9)


@pytest.mark.parametrize("value", [struct.unpack("<f", struct.pack("<I", 0x7FC00000))[0]])
def test_nan_vox_offset(tmp_path: Path, value: float) -> None:
    path = tmp_path / "nan.nii"
    path.write_bytes(_header(vox_offset=value) + bytes(2000))
    assert _one_line_error(path).startswith("invalid vox_offset")


# --- real reference volumes ----------------------------------------------------------------------


def test_reference_volumes_equal_their_dicom_series(shared_data: Path) -> None:
    # dicom2nifti's reference volumes, as converted and reoriented to LAS: every slice has the
    # position and the pixels of the DICOM slice it came from (their pixels are noise, so any
    # flip or transpose would show). The 'failing' series were resampled: not compared.
    root = shared_data / "dicom_series" / "dicom2nifti"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    volumes = sorted(p for p in root.rglob("*_ground_truth*.nii.gz") if "failing" not in p.parts)
    assert len(volumes) >= 40
    for volume in volumes:
        folder = Path(str(volume).split("_ground_truth")[0])
        dicom = [frame for path in sorted(folder.iterdir()) if detect_kind(path) == "dicom"
                 for frame in read(path, image_size=64).frames]
        for frame in read(volume, image_size=64).frames:
            # 4D files: the DICOM slices of every volume lie there; one of them is the frame's.
            there = [d for d in dicom if abs(d.slice_position - frame.slice_position) < 1e-2]
            assert there, f"{volume}: no DICOM slice at {frame.slice_position}"
            assert any(np.array_equal(frame.pixels, d.pixels) for d in there), volume
