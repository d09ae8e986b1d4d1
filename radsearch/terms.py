"""One spelling for each modality, view and body part: the DICOM defined terms.

DICOM files write ``MR``, CSV manifests ``MRI`` or ``Magnetic resonance``; a filter must find both,
and results must show one. Every value is normalised when it is indexed (and existing indexes are
re-normalised, ``catalog.normalise_terms``); filters normalise what the user types the same way, so
``--modality MRI`` and ``--modality MR`` are one filter.

- modality: PS3.3 C.7.3.1.1.1 (CT, MR, CR, DX, US, MG, PT, NM, XA, RF, ...). A plain "X-ray" says
  no more than "projection radiograph" and becomes DX (digital radiography); the ``XRAY`` filter
  family matches CR, DX and RG alike.
- view: the projections of View Position (AP, PA, LATERAL for LL/RL, oblique and decubitus terms)
  and the planes of cross-sectional images (AXIAL, CORONAL, SAGITTAL).
- body part: Body Part Examined terms (PS3.16 Annex L / CID 4031 style: CHEST, HEAD, ABDOMEN,
  ABDOMENPELVIS, CSPINE, ...); "Thorax" is CHEST, "abdomen and pelvis" ABDOMENPELVIS.

A value with no known meaning is kept, upper-cased and with single spaces.
"""

from __future__ import annotations

import hashlib
import re

FIELDS = ("modality", "body_part", "view")

_MODALITY = {
    "MR": ("MRI", "MAGNETIC RESONANCE", "MAGNETIC RESONANCE IMAGING", "NMR"),
    "CT": ("CAT", "CT SCAN", "COMPUTED TOMOGRAPHY", "CTA", "CT ANGIOGRAPHY"),
    "DX": ("XRAY", "X-RAY", "X RAY", "XR", "RADIOGRAPH", "RADIOGRAPHY", "PLAIN FILM", "PLAIN FILMS",
           "DIGITAL RADIOGRAPHY"),
    "CR": ("COMPUTED RADIOGRAPHY",),
    "US": ("ULTRASOUND", "ULTRASONOGRAPHY", "SONOGRAPHY", "ECHO", "ECHOCARDIOGRAPHY", "DOPPLER"),
    "MG": ("MAMMOGRAPHY", "MAMMOGRAM"),
    "PT": ("PET", "POSITRON EMISSION TOMOGRAPHY"),
    "NM": ("NUCLEAR MEDICINE", "SCINTIGRAPHY", "SPECT"),
    "XA": ("ANGIOGRAPHY", "ANGIOGRAM", "DSA"),
    "RF": ("FLUOROSCOPY", "FLUORO"),
}
# Generic words a filter expands to several terms: an "X-ray" may be CR, DX or RG.
_MODALITY_FAMILIES = {alias: ("CR", "DX", "RG") for alias in
                      ("XRAY", "X RAY", "XR", "RADIOGRAPH", "RADIOGRAPHY", "PLAIN FILM", "PLAIN FILMS")}

_VIEW = {
    "AP": ("ANTEROPOSTERIOR", "AP SUPINE", "AP ERECT", "AP UPRIGHT", "AP PORTABLE", "AP SEMI-ERECT"),
    "PA": ("POSTEROANTERIOR", "PA ERECT", "PA UPRIGHT"),
    "LATERAL": ("LAT", "LL", "RL", "L", "LEFT LATERAL", "RIGHT LATERAL", "LATERAL LEFT",
                "LATERAL RIGHT"),
    "AXIAL": ("AX", "AXI", "TRANSVERSE", "TRANSAXIAL", "TRA", "TRANS"),
    "CORONAL": ("COR", "CORO"),
    "SAGITTAL": ("SAG", "SAGIT"),
    "OBLIQUE": ("OBL",),
}
_VIEW_FAMILIES = {"FRONTAL": ("AP", "PA", "FRONTAL")}  # AP or PA

_BODY_PART = {
    "CHEST": ("THORAX", "CHEST PULMONARY"),
    "ABDOMEN": ("ABD", "ABDOMINAL"),
    "PELVIS": ("PELVIC",),
    "ABDOMENPELVIS": ("ABDOMEN PELVIS", "ABD PELVIS", "ABDPELVIS"),
    "CHESTABDOMEN": ("CHEST ABDOMEN", "THORAX ABDOMEN"),
    "CHESTABDPELVIS": ("CHEST ABDOMEN PELVIS", "CAP"),
    "HEADNECK": ("HEAD NECK",),
    "CSPINE": ("C SPINE", "CERVICAL SPINE", "SPINE CERVICAL"),
    "TSPINE": ("T SPINE", "THORACIC SPINE", "DORSAL SPINE", "SPINE THORACIC"),
    "LSPINE": ("L SPINE", "LUMBAR SPINE", "SPINE LUMBAR"),
    "SSPINE": ("SACRUM", "SACRAL SPINE"),
    "WHOLEBODY": ("WHOLE BODY", "TOTAL BODY"),
    "EXTREMITY": ("EXTREMITIES", "LIMB"),
    "BREAST": ("BREASTS", "MAMMARY"),
    "HEART": ("CARDIAC",),
    "KNEE": ("KNEES",),
    "HAND": ("HANDS",),
    "FOOT": ("FEET",),
    "ORBIT": ("ORBITS",),
}


def _canon(value: str) -> str:
    """Upper case, words split on spaces, hyphens, underscores, commas and slashes; 'AND'/'&' kept."""
    return " ".join(re.split(r"[\s,_/\-]+", value.strip().upper())).strip()


def _lookup(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for term, aliases in table.items():
        for alias in (term, *aliases):
            out[_canon(alias)] = term
    return out


_LOOKUPS = {"modality": _lookup(_MODALITY), "view": _lookup(_VIEW), "body_part": _lookup(_BODY_PART)}
_FAMILIES = {"modality": _MODALITY_FAMILIES, "view": _VIEW_FAMILIES, "body_part": {}}
_TABLES = {"modality": _MODALITY, "view": _VIEW, "body_part": _BODY_PART}


def normalise(field: str, value: object) -> str | None:
    """The defined term for ``value`` of ``field`` (modality, body_part, view); None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    canon = _canon(text)
    lookup = _LOOKUPS[field]
    if canon in lookup:
        return lookup[canon]
    if field == "body_part":
        # "Abdomen and pelvis" -> ABDOMENPELVIS, "Head & neck" -> HEADNECK: the defined terms of
        # combined regions are the words run together.
        words = [word for word in canon.split(" ") if word not in ("AND", "&")]
        for candidate in (" ".join(words), "".join(words)):
            if candidate in lookup:
                return lookup[candidate]
    return " ".join(text.upper().split())


def normalise_metadata(metadata: dict) -> dict:
    """``metadata`` with its modality, body part and view as defined terms."""
    return {**metadata, **{field: normalise(field, metadata.get(field))
                           for field in FIELDS if field in metadata}}


def filter_values(field: str, typed: str) -> tuple[str, ...]:
    """The stored values a filter on ``field`` = ``typed`` matches: the defined term the typed
    value means (a generic word: its family, XRAY -> CR, DX, RG), plus every alias of it as a file
    may have written it, so that an index not yet re-normalised answers the same. Aliases of one
    term give the same values: MRI and MR are one filter."""
    term = normalise(field, typed)
    if term is None:
        return ()
    terms = _FAMILIES[field].get(_canon(typed), (term,))
    values: list[str] = []
    for each in terms:
        values.append(each)
        for alias in _TABLES[field].get(each, ()):
            values += [alias.upper(), _canon(alias)]
    return tuple(dict.fromkeys(values))


def _version() -> str:
    """Changes whenever a table above changes, so that indexes are re-normalised once after."""
    tables = repr((_MODALITY, _VIEW, _BODY_PART))
    return hashlib.sha256(tables.encode("utf-8")).hexdigest()[:16]


VERSION = _version()
