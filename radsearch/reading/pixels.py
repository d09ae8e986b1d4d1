"""DICOM pixel pipeline: decode, modality LUT, VOI LUT / window, photometric -> [0, 1] grayscale."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from radsearch.reading.geometry import functional_group
from radsearch.reading.values import as_float, as_int, as_text, first

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")
_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLES = 1 << 18  # enough for stable percentiles; keeps big frames cheap


def render_dicom_frames(ds: Dataset, frames: Sequence[int] | None = None) -> list[np.ndarray]:
    """Decode ``frames`` (default: all) and render each to a float32 [0, 1] grayscale image.

    Grayscale: modality LUT (rescale or LUT sequence, per frame for enhanced objects), then the
    VOI LUT sequence, else the first window, else a 0.5-99.5 % percentile window over
    non-padding pixels; MONOCHROME1 inverted; pixel padding black. Colour (RGB, YBR_*,
    PALETTE COLOR): luminance.
    """
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    n_frames = as_int(ds.get("NumberOfFrames")) or 1
    indices = list(range(n_frames)) if frames is None else list(frames)
    renderer = _Renderer(ds)
    return [
        renderer.render(arr, str(meta["photometric_interpretation"]), meta, index)
        for index, (arr, meta) in zip(indices, decoder.iter_array(ds, indices=indices))
    ]


def hounsfield_frames(ds: Dataset, frames: Sequence[int]) -> Iterator[np.ndarray]:
    """Decode ``frames`` one at a time and yield each one's modality LUT output (Hounsfield units
    for CT; per frame for enhanced objects) as float32 ``(rows, columns)``, pixel padding NaN.

    A generator: one full-resolution float frame is alive at a time, however long the series.
    """
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    renderer = _Renderer(ds)
    indices = list(frames)
    for index, (arr, _) in zip(indices, decoder.iter_array(ds, indices=indices)):
        yield renderer.hounsfield(arr, index)


class _Renderer:
    """Per-object state (LUTs, padding) shared by all frames of one data set."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.photometric = as_text(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
        self.padding = _padding_range(ds)
        self.voi_lut = _voi_lut(ds)

    def render(self, arr: np.ndarray, photometric: str, meta: dict, index: int) -> np.ndarray:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, self.ds)
            return _luminance(rgb, float(np.iinfo(rgb.dtype).max))
        if arr.ndim == 3:
            bits = as_int(meta.get("bits_stored")) or as_int(self.ds.get("BitsStored")) or 8
            if photometric.startswith("YBR"):  # not converted by the decoder: Y is the luminance
                return np.clip(arr[..., 0].astype(np.float32) / float(2**bits - 1), 0.0, 1.0)
            return _luminance(arr, float(2**bits - 1))
        return self._render_gray(arr, index)

    def padding_mask(self, arr: np.ndarray) -> np.ndarray | None:
        """Where the stored values are pixel padding; None when nowhere."""
        if self.padding is None:
            return None
        low, high = self.padding
        padding = (arr >= low) & (arr <= high)
        return padding if padding.any() else None

    def hounsfield(self, arr: np.ndarray, index: int) -> np.ndarray:
        """The modality LUT output of a grayscale frame, pixel padding NaN."""
        values = self._modality(arr, index)
        padding = self.padding_mask(arr)
        if padding is not None:
            values[padding] = np.nan
        return values

    def _render_gray(self, arr: np.ndarray, index: int) -> np.ndarray:
        padding = self.padding_mask(arr)
        values = self._modality(arr, index)
        with np.errstate(all="ignore"):
            out = self._voi(values, index, padding)
        if self.photometric == "MONOCHROME1":
            out = 1.0 - out
        if padding is not None:
            out[padding] = 0.0
        return out

    def _modality(self, arr: np.ndarray, index: int) -> np.ndarray:
        item = functional_group(self.ds, index, "PixelValueTransformationSequence")
        if item is None and "ModalityLUTSequence" in self.ds:
            return apply_modality_lut(arr, self.ds).astype(np.float32)
        source = item if item is not None else self.ds
        values = arr.astype(np.float32)
        if arr.dtype.kind == "f":  # float pixel data may hold NaN/inf
            np.nan_to_num(values, copy=False)
        slope = as_float(source.get("RescaleSlope"))
        intercept = as_float(source.get("RescaleIntercept"))
        if slope is not None and slope != 1.0:
            values *= slope
        if intercept:
            values += intercept
        return values

    def _voi(self, values: np.ndarray, index: int, padding: np.ndarray | None) -> np.ndarray:
        item = functional_group(self.ds, index, "FrameVOILUTSequence")
        if item is None and self.voi_lut is not None:
            first_map, lut = self.voi_lut
            positions = np.clip(np.rint(values) - first_map, 0, lut.size - 1).astype(np.intp)
            return lut[positions]
        source = item if item is not None else self.ds
        center = as_float(first(source.get("WindowCenter")))
        width = as_float(first(source.get("WindowWidth")))
        if center is not None and width is not None and width > 0:
            function = as_text(source.get("VOILUTFunction")) or "LINEAR"
            return _window(values, center, width, function)
        return percentile_window(values, padding)


def _luminance(rgb: np.ndarray, max_value: float) -> np.ndarray:
    gray = rgb.astype(np.float32) @ _LUMA
    return np.clip(gray / max_value, 0.0, 1.0)


def _padding_range(ds: Dataset) -> tuple[float, float] | None:
    """Stored-value range of pixel padding (PixelPaddingValue .. PixelPaddingRangeLimit)."""
    value = as_float(first(ds.get("PixelPaddingValue")))
    if value is None:
        return None
    limit = as_float(first(ds.get("PixelPaddingRangeLimit")))
    value, limit = _signed(value, ds), _signed(value if limit is None else limit, ds)
    return min(value, limit), max(value, limit)


def _signed(value: float, ds: Dataset) -> float:
    """A padding value as the pixels store it: files often write a signed value as US (65535 for -1)."""
    bits = int(as_float(ds.get("BitsAllocated")) or 16)
    if as_float(ds.get("PixelRepresentation")) == 1 and value >= 1 << (bits - 1):
        return value - (1 << bits)
    return value


def _voi_lut(ds: Dataset) -> tuple[int, np.ndarray] | None:
    """(first mapped value, LUT scaled to [0, 1]) of the first VOI LUT Sequence item."""
    seq = ds.get("VOILUTSequence")
    if not seq or "LUTDescriptor" not in seq[0] or "LUTData" not in seq[0]:
        return None
    item = seq[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    n_entries, first_map = descriptor[0] or 1 << 16, descriptor[1]
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the data set's byte order
        little = ds.original_encoding[1] if hasattr(ds, "original_encoding") else True
        lut = np.frombuffer(data, dtype="<u2" if little is not False else ">u2")
    else:
        lut = np.asarray([data] if isinstance(data, int) else list(data), dtype=np.float64)
    lut = lut[:n_entries].astype(np.float32)
    if lut.size == 0:
        return None
    low, high = float(lut.min()), float(lut.max())
    return first_map, (lut - low) / (high - low) if high > low else np.zeros_like(lut)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1], in place."""
    if function == "SIGMOID":
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
        return values
    if function == "LINEAR_EXACT":
        low, span = center - width / 2.0, width
    else:
        low, span = center - 0.5 - (width - 1.0) / 2.0, max(width - 1.0, 1e-6)
    return _linear(values, low, span)


def _linear(values: np.ndarray, low: float, span: float) -> np.ndarray:
    """(values - low) / span clipped to [0, 1], in place."""
    values -= low
    values *= 1.0 / span
    return np.clip(values, 0.0, 1.0, out=values)


def percentile_window(values: np.ndarray, padding: np.ndarray | None = None) -> np.ndarray:
    """Linear window from the 0.5th to the 99.5th percentile of the non-padding values, in place."""
    sample = values.ravel() if padding is None else values[~padding]
    if sample.size == 0:
        return np.zeros_like(values)
    sample = sample[:: max(1, sample.size // _PERCENTILE_SAMPLES)]
    low, high = (float(v) for v in np.percentile(sample, _PERCENTILES))
    return _linear(values, low, high - low if high > low else 1.0)
