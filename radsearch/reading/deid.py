"""Rule-based detection of identifiers in report text, for text whose patient is not known.

The :class:`~radsearch.reading.phi.Scrubber` removes the identifiers a file itself holds (its
patient's name, IDs, birth date). Free text may also name people and numbers no header lists; these
rules find the common forms of them (HIPAA Safe Harbor's kinds that reports carry):

- names after a title or a label: "Mr/Mrs/Ms/Miss/Dr/Prof J. Smith", "Patient: John Q Smith",
  "Name: SMITH^JOHN", "Signed by", "Dictated by", "Referring physician" ...;
- record numbers and IDs: after a label (MRN, ID, accession, case, NHS number, SSN ...), and any
  token of six digits or more (or a run of letters and five digits or more) that is no measurement;
- dates of birth in any common form (numbers in either order, month names, ordinals, two-digit
  years) after DOB, born, date of birth, b.;
- phone and fax numbers, e-mail addresses, street addresses (house number, street name, street
  type), ZIP codes after a state's initials, DICOM UIDs and other long dotted numbers;
- ages over 89 ("93-year-old", "aged 95", "age: 101", "92 yo").

What it cannot catch: a name without a title or label in ordinary prose ("discussed with Smith"),
a place named without an address form, dates other than birth dates (kept: comparison dates are
clinical), a short number that is an ID. Each match becomes ``[REMOVED]``.
"""

from __future__ import annotations

import re

REMOVED = "[REMOVED]"  # upper case: rich would take "[removed]" for a style tag

# A name word: capitalised (O'Neil, Smith-Jones), all capitals, or an initial ("J", "J.").
_NAME_WORD = r"(?:[A-Z]\.|[A-Z][a-z]*(?:['’]?[A-Z][a-z]+)*(?:-[A-Z][a-z]*(?:['’]?[A-Z][a-z]+)*)*|[A-Z]{2,}(?:['’\-][A-Z]+)*)(?![\w\-'’])"
_CAPS_NAME_WORD = r"(?:[A-Z]\.|[A-Z]{2,}(?:['’\-][A-Z]+)*|[A-Z])(?![\w\-'’])"
# Words that follow a title or label without being a name ("Dr. was informed", "Patient History").
_NOT_NAMES = frozenset(
    """a an and are as at be by for from has had have he her his in is it its no not of on or our
    she that the their they this to was were who with was will would should can could may might
    history position positioning information info data details demographics age sex gender dob
    identifier id record records name names number no mrn date birth presents presented
    positioned prone supine upright erect left right status unknown unavailable none
    notified informed aware called contacted discussed paged reviewed i non
    ct mr mri pet fdg us cxr xr ap pa lat ed er icu ob gyn""".split()
)
_TITLES = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Drs|Prof|Doctor)\.?"
# In capitals a title needs its period and a name in capitals: "MR BRAIN" and "... on MR. Masses
# enhance" are no names, "DR. SMITH" is.
_CAPS_TITLES = r"(?:MR|MRS|MS|DR|PROF)\."
_NAME_LABELS = (
    r"patient(?:'s)?\s+name|name\s+of\s+patient|patient|pt|name|surname|last\s+name|first\s+name|"
    r"given\s+name|family\s+name|referring\s+(?:physician|doctor|clinician)|referred\s+by|"
    r"requesting\s+(?:physician|doctor|clinician)|ordering\s+(?:physician|provider)|physician|"
    r"attending|resident|fellow|radiologist|technologist|technician|reader|reporter|"
    r"(?:electronically\s+)?signed(?:\s+by)?|dictated(?:\s+by)?|transcribed(?:\s+by)?|"
    r"reported(?:\s+by)?|read\s+by|verified(?:\s+by)?|approved(?:\s+by)?|interpreted\s+by|"
    r"performed\s+by|mother|father|spouse|guardian|next\s+of\s+kin"
)
_WORD_BOUNDARY_BEFORE = r"(?<![\w])"

# Title + name: "Dr. J. Smith", "Mrs O'Neil", "DR. SMITH JONES".
_TITLED = re.compile(
    rf"{_WORD_BOUNDARY_BEFORE}(?:{_TITLES})[ \t]+(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})"
    rf"|{_WORD_BOUNDARY_BEFORE}{_CAPS_TITLES}[ \t]+(?P<caps>{_CAPS_NAME_WORD}(?:[ \t]+{_CAPS_NAME_WORD}){{0,2}})"
)
# Label with a colon (or "#", "-"): whatever follows on the line, up to four words or a DICOM
# person name, in any letter case ("Name: john smith", "Patient name - SMITH^JOHN").
_LABELLED_COLON = re.compile(
    rf"{_WORD_BOUNDARY_BEFORE}(?:{_NAME_LABELS})[ \t]*[:#=][ \t]*"
    r"(?P<name>[^\W\d_][\w'’.\-^]*(?:[ \t,]+[^\W\d_][\w'’.\-^]*){0,3})",
    re.IGNORECASE,
)
# Labels that name a person without a colon; then only capitalised words count as the name
# ("Patient John Q Smith", "signed by Jane Roe"; not "the attending Radiologist").
_NAME_LABELS_BARE = (
    r"patient|(?:electronically\s+)?signed\s+by|dictated\s+by|transcribed\s+by|reported\s+by|"
    r"read\s+by|verified\s+by|approved\s+by|interpreted\s+by|performed\s+by|referred\s+by|"
    r"(?:referring|requesting|ordering)\s+(?:physician|doctor|clinician|provider)"
)
_LABELLED = re.compile(
    rf"{_WORD_BOUNDARY_BEFORE}(?i:{_NAME_LABELS_BARE})[ \t]+"
    rf"(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}})"
)
_PERSON_NAME = re.compile(r"\b[A-Za-z][A-Za-z'\-]*\^[A-Za-z][A-Za-z'\-^]*")  # DICOM PN: SMITH^JOHN

# IDs after a label: "MRN 12345678", "MR# A-1234", "Acc. no.: 77123409", "ID: QZ7731".
_ID_LABELS = (
    r"mrn|mr\s*#|mr\s+no|mr\s+number|medical\s+record(?:\s+(?:number|no))?|record\s+(?:number|no)|"
    r"patient\s+(?:id|number|no)|pid|id|ids|acc|accession(?:\s+(?:number|no))?|account(?:\s+(?:number|no))?|"
    r"case\s+(?:number|no|id)|study\s+(?:id|number|no)|exam(?:ination)?\s+(?:id|number|no)|"
    r"order\s+(?:number|no|id)|hospital\s+(?:number|no)|nhs(?:\s+(?:number|no))?|ssn|"
    r"social\s+security(?:\s+(?:number|no))?|insurance\s+(?:number|no|id)|member\s+id|"
    r"visit\s+(?:number|no|id)|encounter\s+(?:number|no|id)|admission\s+(?:number|no|id)|"
    r"unit\s+(?:number|no)|chart\s+(?:number|no)"
)
_LABELLED_ID = re.compile(
    rf"(?<![\w])(?:{_ID_LABELS})\.?(?:\s*(?:no|number|nr|num)\.?)?\s*[:#=.]?\s*"
    r"(?P<id>(?=[\w\-/.]*\d)[A-Za-z0-9][\w\-/.]*[A-Za-z0-9]|\d)",
    re.IGNORECASE,
)
# An ID without a label: a token of 6+ digits, or letters run into 5+ digits ("PID83920471",
# "ACC-77123409"), not a decimal or a dotted measurement.
_BARE_ID = re.compile(
    r"(?<![\w.,])(?:[A-Za-z]{1,6}[\-_#]?)?\d(?:[\-_]?\d){5,}(?:[\-_]?[A-Za-z0-9]+)*(?![\w])"
    r"|(?<![\w.,])[A-Za-z]{1,6}[\-_#]?\d{5,}[A-Za-z0-9]*(?![\w])"
)
_DATE_SHAPE = re.compile(r"\d{4}-\d\d-\d\d|\d\d-\d\d-\d{4}")  # a date, not an ID (kept)
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")  # 1.2.840.113619.2.55...

_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|20\d\d|'?\d\d)"
_DATE = (
    rf"(?:\d{{1,4}}[./\-]\d{{1,2}}[./\-]\d{{2,4}}"  # 04.03.1902, 3/4/02, 1902-3-4
    rf"|\d{{8}}"  # 19020304
    rf"|(?:the\s+)?{_DAY}(?:\s+of)?[\s\-]+{_MONTHS}[\s\-,]+{_YEAR}"  # 4th of March 1902, 04-Mar-02
    rf"|{_MONTHS}[\s\-]+{_DAY},?[\s\-]+{_YEAR}"  # March 4, 1902
    rf"|{_MONTHS}[\s\-,]+{_YEAR})"  # March 1902
)
_DOB = re.compile(
    r"(?<![\w])(?:d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s*date|birthdate|birthday|born(?:\s+on)?|"
    r"b\.)\s*[:=\-]?\s*(?:on\s+)?(?P<date>" + _DATE + r")(?![\w])",
    re.IGNORECASE,
)
_PHONE = re.compile(
    r"(?<![\w.\-/])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,5}\)[\s.\-]?|\d{2,5}[\s.\-])"
    r"\d{2,5}(?:[\s.\-]\d{2,5}){0,2}(?![\w.\-/])"
)
_PHONE_LABELLED = re.compile(
    r"(?<![\w])(?:tel|telephone|phone|ph|fax|mobile|mob|cell|pager|bleep|ext)\.?\s*[:#.]?\s*"
    r"(?P<number>\+?[\d()][\d()\s.\-]{2,18}\d)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
# Street types as written in addresses; capitals only spelled out ("1 CHEST CT" is no address).
_STREET_TYPE_WORDS = ("street avenue road boulevard lane drive court place way terrace highway "
                      "parkway square circle crescent close alley row trail plaza").split()
_STREET_TYPES = "|".join(
    [*(w.capitalize() for w in _STREET_TYPE_WORDS), *(w.upper() for w in _STREET_TYPE_WORDS),
     *_STREET_TYPE_WORDS, "St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Pl", "Ter", "Hwy", "Pkwy", "Sq"]
)
_ADDRESS = re.compile(
    rf"(?<![\w.])\d{{1,6}}[A-Za-z]?,?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'\-]*\s+){{1,3}}"
    rf"(?:{_STREET_TYPES})\b\.?"
    r"(?:,?\s+(?i:apt|apartment|suite|ste|unit|flat|#)\.?\s*#?\w+)?"
)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+", re.IGNORECASE)
_STATE_ZIP = re.compile(r"(?<=[,\s])[A-Z]{2}\s+\d{5}(?:-\d{4})?(?!\w)")
_AGE = re.compile(
    r"(?<![\w.])(?P<age>9\d|1[0-4]\d)(?:\s*|-)(?:years?|yrs?|y)(?:[\s\-]*|/)(?:old|o)?(?![\w])"
    r"|(?<![\w.])(?P<age2>9\d|1[0-4]\d)\s*(?:yo|y/o|y\.o\.)(?![\w])"
    r"|(?<![\w])(?:aged?|age:)\s*(?P<age3>9\d|1[0-4]\d)(?![\w.])",
    re.IGNORECASE,
)


def identifier_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds identifiers by these rules: sorted, merged (start, end) spans."""
    spans = [span for match in _TITLED.finditer(text) if (span := _name_span(match))]
    spans += [span for match in _LABELLED_COLON.finditer(text)
              if _label_stands_alone(text, match) and (span := _name_span(match))]
    spans += [span for match in _LABELLED.finditer(text)
              if (span := _name_span(match, least=_bare_label_least(match)))]
    spans += [m.span() for m in _PERSON_NAME.finditer(text)]
    spans += [m.span("id") for m in _LABELLED_ID.finditer(text)]
    spans += [m.span() for m in _BARE_ID.finditer(text) if _is_bare_id(text, m)]
    spans += [m.span() for m in _UID.finditer(text)]
    spans += [m.span("date") for m in _DOB.finditer(text)]
    spans += [m.span() for m in _PHONE.finditer(text)
              if _is_phone(m.group()) and not _UNIT_AFTER.match(text, m.end())]
    spans += [m.span("number") for m in _PHONE_LABELLED.finditer(text)
              if sum(c.isdigit() for c in m.group("number")) >= 4]
    spans += [m.span() for m in _EMAIL.finditer(text)]
    spans += [m.span() for m in _ADDRESS.finditer(text)]
    spans += [m.span() for m in _PO_BOX.finditer(text)]
    spans += [m.span() for m in _STATE_ZIP.finditer(text)]
    for match in _AGE.finditer(text):
        group = next(g for g in ("age", "age2", "age3") if match.group(g))
        spans.append(match.span(group))
    return _merged(spans)


def deidentify(text: str) -> str:
    """``text`` with every identifier these rules find replaced by ``[REMOVED]``."""
    if not text:
        return text
    out, position = [], 0
    for start, end in identifier_spans(text):
        out += [text[position:start], REMOVED]
        position = end
    out.append(text[position:])
    return "".join(out)


def _name_span(match: re.Match[str], least: int = 1) -> tuple[int, int] | None:
    """The name words of a title or label match, up to the first word that is no name; None when
    fewer than ``least`` words are names."""
    group = "caps" if "caps" in match.re.groupindex and match.group("caps") else "name"
    start = match.start(group)
    end, count = start, 0
    for word in re.finditer(r"[^\s,]+", match.group(group)):
        bare = word.group().strip(".'’-:;").lower()
        if not bare or bare in _NOT_NAMES or bare == "removed":
            break
        text = word.group()
        # A sentence's full stop is no part of a name; an initial's is ("J.").
        kept = text if re.fullmatch(r"[A-Za-z]\.", text) else text.rstrip(".;:")
        end, count = start + word.start() + len(kept), count + 1
    return (start, end) if count >= least else None


def _bare_label_least(match: re.Match[str]) -> int:
    """"Patient" without a colon names someone only with two name words ("Patient John Smith";
    not "Patient Currently smokes"); "signed by" and the like with one."""
    return 2 if match.group().split(None, 1)[0].lower() == "patient" else 1


def _label_stands_alone(text: str, match: re.Match[str]) -> bool:
    """A label begins its line or follows punctuation: "Name: ..." but not "Neoplasm Name: ..."."""
    before = text[max(0, match.start() - 80) : match.start()].rsplit("\n", 1)[-1].rstrip()
    return not before or before[-1] in ".,;:|()[]-"


_UNIT_AFTER = re.compile(
    r"[ \t]*(?:%|[munμkc]?(?:g|l|m|mol|s|gy)\b|[a-zμ]{1,4}/|hu\b|cc\b|units?\b|iu\b|bpm\b|mmhg\b)",
    re.IGNORECASE,
)
_REFERENCE = re.compile(r"(?:pmid|pmcid|doi|isbn|issn|pages?|pp?\.?)\s*[:#]?\s*$", re.IGNORECASE)


def _is_bare_id(text: str, match: re.Match[str]) -> bool:
    """A long number is an ID unless it is a date, a range ("1373-1390") or a literature
    reference (PMID, DOI, pages)."""
    token = match.group()
    if _DATE_SHAPE.fullmatch(token):
        return False
    low_high = re.fullmatch(r"(\d{1,5})-(\d{1,5})", token)
    if low_high and len(low_high[1]) == len(low_high[2]) and int(low_high[1]) < int(low_high[2]):
        return False
    if _UNIT_AFTER.match(text, match.end()):
        return False  # a quantity: "531-489-443 ng/mL"
    return not _REFERENCE.search(text[max(0, match.start() - 12) : match.start()])


def _is_phone(candidate: str) -> bool:
    """7 to 15 digits in groups, and not a date or a list of measurements."""
    digits = sum(c.isdigit() for c in candidate)
    if not 7 <= digits <= 15:
        return False
    if re.fullmatch(r"\d{1,4}([./\-])\d{1,2}\1\d{2,4}", candidate.strip()):
        return False  # a date
    return not re.fullmatch(r"\d+(?:\.\d+)?(?:\s+\d+(?:\.\d+)?)*", candidate.strip()) or digits >= 10


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
