"""Decide by SOP Class UID what a DICOM object is: an image, a structured report, or neither."""

from __future__ import annotations

from typing import Literal

from pydicom.dataset import Dataset
from pydicom.uid import UID

_STORAGE = "1.2.840.10008.5.1.4.1.1."
_SR_FAMILY = _STORAGE + "88."
_KEY_OBJECT_SELECTION = _STORAGE + "88.59"
_RT_IMAGES = {_STORAGE + "481.1", _STORAGE + "481.23", _STORAGE + "481.24"}
# UID prefixes (matched whole or followed by '.') of objects that carry no image we embed,
# even when they hold pixel data (SEG, RT Dose).
_NON_IMAGE_PREFIXES: dict[str, str] = {
    "1.2.840.10008.1.3.10": "media storage directory (DICOMDIR)",
    _STORAGE + "4.2": "MR spectroscopy",
    _STORAGE + "8": "standalone overlay",
    _STORAGE + "9": "waveform",
    _STORAGE + "10": "standalone modality LUT",
    _STORAGE + "11": "presentation state",
    _STORAGE + "66": "raw data, registration or segmentation",
    _STORAGE + "67": "real world value mapping",
    _STORAGE + "68": "surface scan",
    _STORAGE + "77.1.5.3": "stereometric relationship",
    _STORAGE + "78": "ophthalmic measurements",
    _STORAGE + "79": "ophthalmic report",
    _STORAGE + "80": "visual field measurements",
    _KEY_OBJECT_SELECTION: "key object selection document",
    _STORAGE + "90": "content assessment results",
    _STORAGE + "91": "annotations",
    _STORAGE + "104": "encapsulated document",
    _STORAGE + "129": "standalone PET curve",
    _STORAGE + "131": "structured display",
    _STORAGE + "200": "procedure protocol",
    _STORAGE + "201": "inventory",
    _STORAGE + "481": "radiotherapy object",
    "1.2.840.10008.5.1.4.38": "hanging protocol",
    "1.2.840.10008.5.1.4.39": "color palette",
    "1.2.840.10008.5.1.4.43": "implant template",
    "1.2.840.10008.5.1.4.44": "implant assembly template",
    "1.2.840.10008.5.1.4.45": "implant template group",
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

Category = Literal["image", "sr", "skip", "no_pixels"]


def sop_class_uid(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    return UID(str(uid).strip().rstrip("\x00")) if uid else None


def _matches(uid: str, prefix: str) -> bool:
    return uid == prefix or uid.startswith(prefix + ".")


def classify(ds: Dataset) -> tuple[Category, str]:
    """(category, reason). The reason names the object for a 'skip'."""
    uid = sop_class_uid(ds)
    text = str(uid) if uid else ""
    name = uid.name if uid and uid.name != text else None
    if text.startswith(_SR_FAMILY) and text != _KEY_OBJECT_SELECTION:
        return "sr", ""
    if text not in _RT_IMAGES:
        for prefix, label in _NON_IMAGE_PREFIXES.items():
            if _matches(text, prefix):
                return "skip", _reason(label, name, ds)
    if any(k in ds for k in PIXEL_KEYWORDS):
        return "image", ""
    if name is not None and "Image" not in name:
        return "skip", _reason(name, None, ds)
    return "no_pixels", "no pixel data"


def _reason(label: str, name: str | None, ds: Dataset) -> str:
    modality = str(ds.get("Modality") or "").strip()
    what = f"{label} ({name})" if name else label
    return f"not an image: {what}" + (f", modality {modality}" if modality else "")
