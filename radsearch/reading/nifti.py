"""Read one NIfTI-1/NIfTI-2 volume (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pairs) as a series.

One file is one series: its first 3D volume (a 4D fMRI or diffusion file gives its first volume,
the b=0 image of most diffusion files), one frame per slice, each with its position along the
slice normal computed as for DICOM (``nifti_geometry``), intensities scaled by scl_slope/scl_inter.

nibabel parses the fixed-size header (byte order, datatype, dimensions, qform/sform, scaling,
dim_info); the image bytes are read here, after the checks (a plain file's size against the
volume's; a gzip stream as it inflates), so that a hostile header (absurd dimensions, a wrong
vox_offset, a truncated or bomb gzip stream) gets one line and never makes the reader allocate
what it declares. Header extensions and the header's free-text fields are never read.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header

from radsearch.reading.detect import (
    NIFTI_HEADER_BYTES,
    gunzip_head,
    nifti_version,
    read_head,
)
from radsearch.reading.nifti_geometry import SliceLayout, slice_layout
from radsearch.reading.pixels import percentile_window
from radsearch.reading.prepare import (
    CtWindow,
    prepare_channels_for_model,
    prepare_for_model,
    render_ct_windows,
)
from radsearch.reading.types import (
    ImageFrame,
    ReadError,
    ReadResult,
    empty_metadata,
    os_reason,
    short_reason,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_VOX_OFFSET = 64 * 1024 * 1024  # header extensions hold kilobytes; more is a broken header
_MAX_SIDECAR_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# CT is told by its sidecar's Modality, else by its values in Hounsfield units: air (-1000 HU)
# fills a good part of any CT's field of view, and nothing is below the scanners' -3024 floor.
_AIR_HU = (-1050.0, -950.0)
_MIN_AIR_FRACTION = 0.05
_LOWEST_HU = -3100.0
_HIGHEST_HU = 32767.0
_SAMPLE = 1 << 20


def nifti_name(path: Path) -> bool:
    """Whether the file is named as a NIfTI volume (``x.nii``, ``x.nii.gz``)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """``x`` of ``x.nii``, ``x.nii.gz``, ``x.hdr``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".hdr.gz", ".hdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def not_nifti_reason(path: Path) -> str:
    """Why a file named as NIfTI is not recognised as one (one line)."""
    head = read_head(Path(path))
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"\x1f\x8b"):
        inflated = gunzip_head(Path(path))
        if len(inflated) < NIFTI_HEADER_BYTES[1]:
            return "not a NIfTI file: truncated or damaged gzip stream before the end of the header"
        return "not a NIfTI file: no NIfTI-1/NIfTI-2 header inside the gzip stream"
    return "not a NIfTI file: no NIfTI-1/NIfTI-2 header"


def read_nifti(
    path: Path, *, image_size: int, max_frames: int, max_pixels: int,
    ct_windows: Sequence[CtWindow] = (),
) -> ReadResult:
    """The first volume of a NIfTI file as model-ready slices; ReadError with one line if bad."""
    with _one_line_errors():
        return _read(Path(path), image_size=image_size, max_frames=max_frames,
                     max_pixels=max_pixels, ct_windows=ct_windows)


def nifti_slice_values(path: Path, index: int, *, max_pixels: int = 2**28
                       ) -> tuple[np.ndarray, float | None] | None:
    """Slice ``index`` (a frame index of :func:`read_nifti`) as shown, in its real values
    (scl_slope/scl_inter applied: Hounsfield units for CT; float32, NaN where not finite), and its
    position along the slice normal; None for an RGB volume. ReadError with one line if bad."""
    with _one_line_errors():
        volume = _load(Path(path), max_pixels)
        if volume.rgb:
            return None
        if not 0 <= index < volume.shape[volume.layout.slice_axis]:
            raise ReadError(f"no slice {index}: the volume has "
                            f"{volume.shape[volume.layout.slice_axis]}")
        values = _scaled(volume.layout.image(volume.voxels, index), volume.slope, volume.inter)
        return values, volume.layout.position(volume.shape, index)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Whatever goes wrong reading a file becomes a one-line ReadError. A damaged header's numbers
    may overflow on the way (scaling, affine): NaN or inf, not warnings."""
    with _quiet_nibabel(), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except ReadError:
            raise
        except MemoryError:
            raise ReadError("out of memory while reading the volume") from None
        except OSError as e:
            raise ReadError(os_reason(e)) from None
        except Exception as e:  # anything else from nibabel or numpy: one line, no traceback
            raise ReadError(f"cannot read NIfTI: {short_reason(e)}") from e


@dataclass
class _Volume:
    voxels: np.ndarray  # the first volume's stored values, (x, y, z)
    shape: tuple[int, int, int]
    layout: SliceLayout
    slope: float | None
    inter: float | None
    rgb: bool
    n_volumes: int
    oriented: bool  # an sform or qform places it in the patient; else only the voxel sizes do


def _load(path: Path, max_pixels: int) -> _Volume:
    header = _header(path)
    shape, dtype, samples, n_volumes = _checked_image(header, max_pixels)
    data_path, offset = _data_location(path, header)
    voxels = _read_volume(data_path, offset, shape, dtype, to_end=n_volumes == 1)
    layout = slice_layout(_affine(header), shape, header.get_dim_info()[2])
    slope, inter = header.get_slope_inter() if samples == 1 else (None, None)
    oriented = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    return _Volume(voxels, shape, layout, slope, inter, samples > 1, n_volumes, oriented)


def _read(
    path: Path, *, image_size: int, max_frames: int, max_pixels: int,
    ct_windows: Sequence[CtWindow],
) -> ReadResult:
    volume = _load(path, max_pixels)
    layout, slope, inter = volume.layout, volume.slope, volume.inter
    sidecar = _sidecar(path)
    modality = (_text(sidecar.get("Modality")) if volume.rgb
                else _modality(sidecar, volume.voxels, slope, inter))

    warnings_: list[str] = []
    if volume.n_volumes > 1:
        warnings_.append(f"4D: read the first of {volume.n_volumes} volumes")
    n_slices = volume.shape[layout.slice_axis]
    indices = list(range(n_slices))
    if n_slices > max_frames:
        indices = np.linspace(0, n_slices - 1, max_frames).round().astype(int).tolist()
        warnings_.append(f"sampled {max_frames} of {n_slices} slices evenly")
    as_ct = bool(ct_windows) and modality == "CT"
    frames = [
        ImageFrame(index, _model_pixels(layout.image(volume.voxels, index), slope, inter,
                                        image_size, ct_windows if as_ct else ()),
                   layout.position(volume.shape, index), None)
        for index in indices
    ]
    rows, columns = layout.image(volume.voxels, 0).shape
    metadata = empty_metadata()
    metadata.update(
        modality=modality, body_part=_text(sidecar.get("BodyPartExamined")),
        view=layout.plane if volume.oriented else None,
        manufacturer=_text(sidecar.get("Manufacturer")),
        rows=rows, columns=columns, n_frames=n_slices,
    )
    return ReadResult(str(path), "nifti", None, None, None, None, metadata, frames,
                      warnings=warnings_)


@contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs what it finds odd in a header; here that is either fine or a ReadError."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open(path: Path) -> BinaryIO:
    """The file, inflated when it is gzip (closing the stream closes the file)."""
    with open(path, "rb") as handle:
        packed = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if packed else open(path, "rb")  # type: ignore[return-value]


def _header(path: Path) -> Nifti1Header:
    with _open(path) as stream:
        block = _read_at_most(stream, NIFTI_HEADER_BYTES[2])
    version = nifti_version(block)
    if version is None:
        raise ReadError("not a NIfTI file: no NIfTI-1/NIfTI-2 header")
    size = NIFTI_HEADER_BYTES[version]
    if len(block) < size:
        raise ReadError(f"truncated NIfTI header: {len(block)} of {size} bytes")
    kind = Nifti1Header if version == 1 else Nifti2Header
    return kind(block[:size], check=False)


def _affine(header: Nifti1Header) -> np.ndarray | None:
    """The voxel -> RAS affine (sform, else qform, else from the voxel sizes: nibabel's choice);
    None when the header's transform cannot be computed."""
    try:
        return np.asarray(header.get_best_affine(), dtype=np.float64)
    except Exception:
        return None


def _checked_image(header: Nifti1Header, max_pixels: int) -> tuple[tuple[int, int, int], np.dtype,
                                                                 int, int]:
    """(3D shape of the first volume, dtype, samples per voxel, volumes), refused before reading
    when the header's dimensions, datatype or size cannot be or should not be read."""
    dims = [int(d) for d in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise ReadError(f"invalid NIfTI dimension count dim[0] = {dims[0]}")
    sizes = dims[1 : dims[0] + 1]
    if any(n < 1 for n in sizes):
        raise ReadError(f"invalid NIfTI dimensions {sizes}: each must be at least 1")
    shape = (*sizes[:3], *(1,) * (3 - len(sizes[:3])))
    n_volumes = int(np.prod(sizes[3:], dtype=object)) if len(sizes) > 3 else 1
    code = int(header["datatype"])
    try:
        dtype = header.get_data_dtype()
    except Exception:
        raise ReadError(f"unsupported NIfTI datatype code {code}") from None
    if dtype.kind == "c" or (dtype.kind == "V" and dtype.names is None):
        raise ReadError(f"unsupported NIfTI datatype code {code} ({dtype}): not a grayscale "
                        "or RGB image")
    samples = len(dtype.names) if dtype.names else 1  # RGB 3, RGBA 4
    n_pixels = shape[0] * shape[1] * shape[2] * samples
    if n_pixels > max_pixels:
        raise ReadError(
            f"declared volume size {shape[0]}x{shape[1]}x{shape[2]}, {samples} sample(s) = "
            f"{n_pixels} voxels is too large (limit {max_pixels})")
    return shape, dtype, samples, n_volumes


def _data_location(path: Path, header: Nifti1Header) -> tuple[Path, int]:
    """The file holding the image bytes and where they start in it (inflated, for gzip)."""
    try:
        offset = int(header.get_data_offset())
    except (ValueError, OverflowError):
        raise ReadError(f"invalid vox_offset {header['vox_offset']}") from None
    single = bytes(header["magic"])[:3] in (b"n+1", b"n+2")
    if offset < 0 or offset > _MAX_VOX_OFFSET:
        raise ReadError(f"invalid vox_offset {offset} (limit {_MAX_VOX_OFFSET})")
    if single:
        size = NIFTI_HEADER_BYTES[2 if isinstance(header, Nifti2Header) else 1]
        if offset == 0:  # not allowed in a single file; writers that leave it 0 mean "after the
            return path, size + 4  # header and its 4 extension bytes", as nibabel reads it
        if offset < size:
            raise ReadError(f"invalid vox_offset {offset}: the image data would overlap the "
                            f"{size}-byte header")
        return path, offset
    name = path.name
    for hdr, img in ((".hdr.gz", ".img.gz"), (".hdr", ".img")):
        if name.lower().endswith(hdr):
            base = name[: -len(hdr)]
            for candidate in (base + img, base + img.upper()):
                if (path.parent / candidate).is_file():
                    return path.parent / candidate, offset
            raise ReadError(f"header of a NIfTI pair without its image file {base + img}")
    raise ReadError("header of a NIfTI pair (magic ni1/ni2): name it .hdr beside its .img file")


def _read_volume(path: Path, offset: int, shape: tuple[int, int, int], dtype: np.dtype, *,
                 to_end: bool) -> np.ndarray:
    """The first volume's voxels, (x, y, z) in NIfTI's Fortran order. ``to_end``: the volume is
    all the file holds, so a gzip stream is read to its end, where its checksum is verified."""
    n_bytes = shape[0] * shape[1] * shape[2] * dtype.itemsize
    try:
        with _open(path) as stream:
            if isinstance(stream, gzip.GzipFile):
                # Its inflated size is unknown until read: grown as it inflates, so a small
                # truncated stream declaring a large volume never has that volume allocated.
                _skip(stream, offset)
                buffer = _read_growing(stream, n_bytes)
                if to_end and len(buffer) == n_bytes:
                    stream.read(_READ_CHUNK)
            else:
                present = os.fstat(stream.fileno()).st_size - offset
                if present < n_bytes:
                    raise ReadError(f"truncated NIfTI file: the image data needs {n_bytes} bytes "
                                    f"from offset {offset}, {max(present, 0)} present")
                stream.seek(offset)
                buffer = bytearray(n_bytes)
                del buffer[_read_into(stream, buffer) :]  # in place: shorter only if it shrank
    except EOFError:
        raise ReadError("truncated gzip stream: it ends inside the image data") from None
    except (zlib.error, gzip.BadGzipFile) as e:
        raise ReadError(f"damaged gzip stream: {short_reason(e)}") from None
    if len(buffer) < n_bytes:
        raise ReadError(f"truncated NIfTI file: the image data needs {n_bytes} bytes, "
                        f"{len(buffer)} present")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F")


def _skip(stream: BinaryIO, offset: int) -> None:
    """Move to ``offset`` in a gzip stream, inflating in chunks (never ``offset`` bytes at once)."""
    while (left := offset - stream.tell()) > 0:
        if not stream.read(min(left, _READ_CHUNK)):
            raise ReadError(f"truncated NIfTI file: it ends before vox_offset {offset}")


def _read_growing(stream: BinaryIO, n: int) -> bytearray:
    """Up to ``n`` bytes of ``stream``, in chunks appended as they come."""
    buffer = bytearray()
    while len(buffer) < n and (chunk := stream.read(min(n - len(buffer), _READ_CHUNK))):
        buffer += chunk
    return buffer


def _read_into(stream: BinaryIO, buffer: bytearray) -> int:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = stream.readinto(view[got : got + _READ_CHUNK])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _read_at_most(stream: BinaryIO, n: int) -> bytes:
    try:
        return stream.read(n)
    except EOFError:
        raise ReadError("truncated gzip stream: it ends inside the NIfTI header") from None
    except (zlib.error, gzip.BadGzipFile) as e:
        raise ReadError(f"damaged gzip stream: {short_reason(e)}") from None


def _model_pixels(image: np.ndarray, slope: float | None, inter: float | None, size: int,
                  ct_windows: Sequence[CtWindow]) -> np.ndarray:
    """One shown slice, model-ready: CT in ``ct_windows`` when given, else a gray image with a
    0.5-99.5 % percentile window (NIfTI has no VOI window), as DICOM without one."""
    if image.dtype.names:  # RGB(A): luminance, as DICOM colour images
        rgb = np.stack([image[name] for name in ("R", "G", "B")], axis=-1).astype(np.float32)
        return prepare_for_model(np.clip(rgb @ _LUMA / 255.0, 0.0, 1.0), size)
    values = _scaled(image, slope, inter)
    if ct_windows:
        return prepare_channels_for_model(render_ct_windows(values, ct_windows), size)
    invalid = np.isnan(values)
    return prepare_for_model(percentile_window(values, invalid if invalid.any() else None), size)


def _scaled(values: np.ndarray, slope: float | None, inter: float | None) -> np.ndarray:
    """float32 copy in real units (scl_slope, scl_inter: Hounsfield units for CT); NaN where
    the file holds a non-finite value."""
    out = values.astype(np.float32)
    out[~np.isfinite(out)] = np.nan
    if slope is not None and slope != 1.0:
        out *= np.float32(slope)
    if inter:
        out += np.float32(inter)
    return out


def _modality(sidecar: dict, volume: np.ndarray, slope: float | None, inter: float | None
              ) -> str | None:
    """The sidecar's Modality (BIDS / dcm2niix), else CT when the values are Hounsfield units."""
    stated = _text(sidecar.get("Modality"))
    if stated:
        return stated.upper()
    flat = volume.reshape(-1, order="A")
    sample = _scaled(flat[:: max(1, flat.size // _SAMPLE)], slope, inter)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0 or sample.min() < _LOWEST_HU or sample.max() > _HIGHEST_HU:
        return None
    air = np.count_nonzero((sample >= _AIR_HU[0]) & (sample <= _AIR_HU[1]))
    return "CT" if air >= _MIN_AIR_FRACTION * sample.size else None


def _sidecar(path: Path) -> dict:
    """The JSON beside the volume (``x.json`` for ``x.nii.gz``, BIDS style), or {}: only its
    technique fields are used, never identifying ones."""
    candidate = path.parent / (nifti_stem(path) + ".json")
    try:
        if not candidate.is_file() or candidate.stat().st_size > _MAX_SIDECAR_BYTES:
            return {}
        data = json.loads(candidate.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
