"""Plain text of a DICOM Structured Report, from its content tree."""

from __future__ import annotations

from pydicom.dataset import Dataset

from radsearch.reading.values import as_text

_MAX_DEPTH = 64
# Observation context names observers, subjects and organisations: identifying, never text.
_SKIPPED_RELATIONSHIPS = {"HAS OBS CONTEXT"}


def report_text(ds: Dataset) -> str:
    """CONTAINER concept names become headings ("FINDINGS:"); TEXT, CODE and NUM items become
    lines. Person names, dates, UIDs, coordinates and references are left out."""
    lines: list[str] = []
    _walk(ds, lines, depth=0)
    return "\n".join(lines).strip()


def _walk(item: Dataset, lines: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if as_text(item.get("RelationshipType")) in _SKIPPED_RELATIONSHIPS:
        return
    value_type = as_text(item.get("ValueType"))
    concept = _code_meaning(item.get("ConceptNameCodeSequence"))
    if value_type == "CONTAINER":
        if concept:
            if lines:
                lines.append("")
            lines.append(f"{concept.upper()}:")
    elif value_type == "TEXT":
        text = _clean(item.get("TextValue"))
        if text:
            lines.append(text)
    elif value_type == "CODE":
        meaning = _code_meaning(item.get("ConceptCodeSequence"))
        if meaning:
            lines.append(f"{concept}: {meaning}" if concept else meaning)
    elif value_type == "NUM":
        measured = _numeric(item.get("MeasuredValueSequence"))
        if measured:
            lines.append(f"{concept}: {measured}" if concept else measured)
    for child in item.get("ContentSequence") or ():
        _walk(child, lines, depth + 1)


def _code_meaning(seq: object) -> str | None:
    if not seq:
        return None
    return as_text(seq[0].get("CodeMeaning"))  # type: ignore[index]


def _numeric(seq: object) -> str | None:
    if not seq:
        return None
    measured = seq[0]  # type: ignore[index]
    number = as_text(measured.get("NumericValue"))
    if number is None:
        return None
    unit = None
    units = measured.get("MeasurementUnitsCodeSequence")
    if units:
        code = units[0]
        ucum = as_text(code.get("CodingSchemeDesignator")) == "UCUM"
        unit = as_text(code.get("CodeValue") if ucum else code.get("CodeMeaning"))
    return f"{number} {unit}" if unit and unit != "1" else number


def _clean(value: object) -> str | None:
    text = as_text(value)
    if text is None:
        return None
    return "\n".join(line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip()
