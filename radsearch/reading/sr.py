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
    n_content = _walk(ds, lines, depth=0)
    return "\n".join(lines).strip() if n_content else ""  # headings alone are no report


def _walk(item: Dataset, lines: list[str], depth: int) -> int:
    """Append the item's lines and its children's; return how many content (non-heading) lines."""
    if depth > _MAX_DEPTH or as_text(item.get("RelationshipType")) in _SKIPPED_RELATIONSHIPS:
        return 0
    value_type = as_text(item.get("ValueType"))
    concept = _code_meaning(item.get("ConceptNameCodeSequence"))
    line = None
    if value_type == "CONTAINER":
        if concept:
            lines.extend(["", f"{concept.upper()}:"] if lines else [f"{concept.upper()}:"])
    elif value_type == "TEXT":
        line = _clean(item.get("TextValue"))
    elif value_type == "CODE":
        line = _labelled(concept, _code_meaning(item.get("ConceptCodeSequence")))
    elif value_type == "NUM":
        line = _labelled(concept, _numeric(item.get("MeasuredValueSequence")))
    if line:
        lines.append(line)
    return bool(line) + sum(
        _walk(child, lines, depth + 1) for child in item.get("ContentSequence") or ()
    )


def _labelled(concept: str | None, value: str | None) -> str | None:
    if not value:
        return None
    return f"{concept}: {value}" if concept else value


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
    if units:  # the code value is the unit's symbol ("mm"); the meaning spells it out
        unit = as_text(units[0].get("CodeValue")) or as_text(units[0].get("CodeMeaning"))
    return f"{number} {unit}" if unit and unit != "1" else number


def _clean(value: object) -> str | None:
    text = as_text(value)
    if text is None:
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.strip() for line in lines).strip()
