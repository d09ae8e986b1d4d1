"""Radiology report text: reading report files, sections and sentences.

Where a study's report comes from (sidecar convention)
-------------------------------------------------------
- A PNG/JPEG image ``X.png`` (or ``X.jpg``/``X.jpeg``) with ``X.txt`` or ``X.json`` beside it: that file is
  X's report and X is a study of its own (``sidecar_for_image``).
- A folder of images or DICOM files: ``report.txt`` or ``report.json`` in the folder is the report of the
  study in that folder (``folder_report``).
- ``--reports CSV``: one row a report (``load_reports_csv``). The key column (the first present of
  ``study``, ``study_key``, ``study_uid``, ``key``, ``path``, ``image_path``, ``file``) holds a
  StudyInstanceUID, a study folder or an image file; the text column is ``report`` or ``text``. A key is a
  path when it contains ``/`` or ``\\``, ends with an image extension, or names an existing file or folder
  next to the CSV; paths are relative to the CSV's folder. Optional columns ``modality``, ``body_part``,
  ``view``, ``study_date`` and ``description`` become metadata. A group column (``GROUP_COLUMNS``, or
  ``study`` when a path column is the key) names the study each image belongs to. Rows with the same
  key are joined with a blank line (and listed in ``CsvReports.warnings``); broken quoting refuses the
  CSV with the lines concerned.

Report files
------------
``.json`` files hold ``{"report": "..."}``, ``{"text": "..."}`` or section keys (``{"findings": "...",
"impression": "..."}``, composed in file order into ``"FINDINGS: ...\\nIMPRESSION: ..."``); any other
file is plain text. Text is read as UTF-8 (with or without a byte-order mark) or as UTF-16/UTF-32 with a
byte-order mark. There is deliberately no fallback to Windows-1252 or Latin-1: a guessed encoding indexes
wrong letters without telling anyone, so a file that is not valid UTF-8 is refused with one line that
says where and how to convert it. Files over 2 MB are refused: a report is a few kilobytes.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radsearch.errors import RadsearchError

MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_REPORT_SENTENCES = 2000  # a report is tens of sentences; more is a dump, embedded only in part
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"})
SIDECAR_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
PREAMBLE = "REPORT"


class ReportError(RadsearchError):
    """A report file or reports CSV that cannot be used; ``str(error)`` is one line."""


@dataclass(frozen=True)
class Sentence:
    section: str  # canonical upper-case heading, "REPORT" before any heading
    index: int  # position in the whole report, from 0
    text: str


# --- sections -----------------------------------------------------------------------------------------

# Heading words (lower case, single spaces) -> canonical section.
_SECTION_NAMES: dict[str, str] = {
    "findings": "FINDINGS",
    "finding": "FINDINGS",
    "impression": "IMPRESSION",
    "impressions": "IMPRESSION",
    "opinion": "IMPRESSION",
    "interpretation": "IMPRESSION",
    "conclusion": "CONCLUSION",
    "conclusions": "CONCLUSION",
    "comparison": "COMPARISON",
    "comparisons": "COMPARISON",
    "prior studies": "COMPARISON",
    "indication": "INDICATION",
    "indications": "INDICATION",
    "clinical indication": "INDICATION",
    "reason for exam": "INDICATION",
    "reason for examination": "INDICATION",
    "reason for study": "INDICATION",
    "history": "HISTORY",
    "clinical history": "HISTORY",
    "clinical information": "HISTORY",
    "clinical info": "HISTORY",
    "clinical details": "HISTORY",
    "clinical data": "HISTORY",
    "clinical notes": "HISTORY",
    "patient history": "HISTORY",
    "technique": "TECHNIQUE",
    "protocol": "TECHNIQUE",
    "examination": "EXAMINATION",
    "exam": "EXAMINATION",
    "procedure": "EXAMINATION",
    "type of examination": "EXAMINATION",
    "recommendation": "RECOMMENDATION",
    "recommendations": "RECOMMENDATION",
}

# Longest names first so that "clinical history" wins over "history".
_HEADING_ALTERNATION = "|".join(
    r"\s+".join(map(re.escape, name.split())) for name in sorted(_SECTION_NAMES, key=len, reverse=True)
)
_HEADING_WITH_COLON = re.compile(rf"\b({_HEADING_ALTERNATION})[ \t]*:", re.IGNORECASE)
_HEADING_LINE = re.compile(rf"^[ \t]*({_HEADING_ALTERNATION})[ \t]*:?[ \t\r]*$", re.IGNORECASE | re.MULTILINE)


def _canonical(heading: str) -> str:
    return _SECTION_NAMES[" ".join(heading.lower().split())]


def _is_heading_position(text: str, match: re.Match[str]) -> bool:
    """A heading with a colon counts at a line start, after a sentence end, or inline in upper case."""
    i = match.start()
    while i > 0 and text[i - 1] in " \t\r":
        i -= 1
    if i == 0 or text[i - 1] == "\n":
        return True
    # "...no effusion IMPRESSION: ..." - an upper-case heading is a heading wherever it stands.
    if match.group(1).isupper():
        return True
    # "Chest X-ray. Finding: COVID-19." - a singular "Finding:" inside a line names one finding, a
    # label of the sentence, not a section.
    return text[i - 1] in ".;!?)" and match.group(1).lower() != "finding"


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split a report into ``[(SECTION, body)]`` in order; text before any heading is "REPORT".

    Headings are recognised case-insensitively with a colon (at a line start, after a sentence, or inline
    when written in upper case) or alone on their line. Synonyms map to one canonical name
    ("Clinical information" -> HISTORY, "Opinion" -> IMPRESSION). Sections with empty bodies are dropped.
    """
    marks = [(m.start(), m.end(), _canonical(m.group(1))) for m in _HEADING_LINE.finditer(text)]
    line_headings = {m.start(1) for m in _HEADING_LINE.finditer(text)}
    for m in _HEADING_WITH_COLON.finditer(text):
        if m.start() not in line_headings and _is_heading_position(text, m):
            marks.append((m.start(), m.end(), _canonical(m.group(1))))
    marks.sort()

    sections: list[tuple[str, str]] = []
    current, body_start = PREAMBLE, 0
    for start, end, name in marks:
        sections.append((current, text[body_start:start]))
        current, body_start = name, end
    sections.append((current, text[body_start:]))
    return [(name, body.strip()) for name, body in sections if body.strip()]


# --- sentences ----------------------------------------------------------------------------------------

# Words that end with a period without ending the sentence (compared in lower case, without the period).
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "eg", "ie", "vs", "v", "dr", "drs", "mr", "mrs", "ms", "prof", "approx", "appr", "cf",
     "incl", "st", "sr", "jr", "rt", "lt", "pt", "pts", "al", "abd"}
)
# Abbreviations only before a number ("No. 4", "max. 3 cm"): elsewhere they may end a sentence ("... No.").
_NUMBER_ABBREVIATIONS = frozenset(
    {"no", "nos", "nr", "vol", "p", "pp", "fig", "figs", "ser", "im", "img", "sl", "max", "min", "ca"}
)
# Lines ending in one of these continue on the next line (hard-wrapped prose).
_CONTINUATION_WORDS = frozenset(
    {"a", "an", "the", "of", "with", "without", "and", "or", "to", "in", "on", "at", "by", "for", "from",
     "is", "are", "was", "were", "be", "than", "as", "into", "within", "no", "not", "which", "that"}
)

_SYMBOL_BULLET = re.compile(r"^[ \t]*(?:[-*\u2022\u25aa\u25cf\u2013]|\(?[a-hA-H]\))[ \t]+(?=\S)")
_INLINE_BULLET = re.compile(r"\s+[\u2022\u25aa\u25cf]\s+")  # "A. • B." (a hyphen inline is punctuation)
_NUMBER_BULLET = re.compile(r"^[ \t]*\(?\d{1,2}[.)][ \t]+(?=\S)")
_LIST_NUMBER = re.compile(r"(?:^|(?<=\s))\(?(\d{1,2})[.)][ \t]+(?=\S)")
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ELLIPSIS = re.compile(r"(?:\.\s*){3,}|\u2026")
_WORD_BEFORE = re.compile(r"(\S+?)[.!?]+[\"')\]]*$")
_WINDOW = 80  # characters before a period that decide whether it ends a sentence (keeps splitting linear)


def _lines_to_chunks(text: str) -> list[str]:
    """Join hard-wrapped lines; a blank line, a list item or a new capitalised line starts a new chunk."""
    chunks: list[list[str]] = []
    previous = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            previous = ""
            continue
        starts_item = bool(_SYMBOL_BULLET.match(line) or _NUMBER_BULLET.match(line))
        last_word = previous.rsplit(None, 1)[-1].lower() if previous else ""
        continues = (
            previous
            and not starts_item
            and (not line[0].isupper() or previous[-1] in ",;:(-/" or last_word in _CONTINUATION_WORDS)
        )
        if continues:
            chunks[-1].append(line)
        else:
            chunks.append([line])
        previous = line
    return [" ".join(chunk) for chunk in chunks]


def _list_items(chunk: str) -> list[str]:
    """Split "1. A 2. B" apart, dropping the numbers.

    A number is a list marker at the start of the chunk, after a sentence end, or when it follows the
    previous marker ("2." after "1."); "1." also after a colon.
    """
    cuts: list[tuple[int, int]] = []
    expected = None
    for m in _LIST_NUMBER.finditer(chunk):
        number = int(m.group(1))
        before = chunk[max(0, m.start() - _WINDOW) : m.start()].rstrip()
        after_sentence = before[-1:] in (".", ";", "!", "?") and _ends_sentence(before, m.group(1))
        if not before or number == expected or after_sentence or (number == 1 and before[-1] == ":"):
            cuts.append((m.start(), m.end()))
            expected = number + 1
    if not cuts:
        return [chunk]
    starts = [start for start, _ in cuts] + [len(chunk)]
    return [chunk[: starts[0]]] + [chunk[end:nxt] for (_, end), nxt in zip(cuts, starts[1:])]


def _ends_sentence(tail: str, next_char: str) -> bool:
    """Whether the period, "!" or "?" that ends ``tail`` (the text before it) ends a sentence."""
    m = _WORD_BEFORE.search(tail)
    if m is None or not tail.endswith("."):
        return True
    word = m.group(1).lstrip("(\"'[")
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return False
    if lower in _NUMBER_ABBREVIATIONS and next_char.isdigit():
        return False
    return not (len(word) == 1 and word.isupper())  # an initial: "Dr. J. Smith"


def _sentences_in(item: str) -> list[str]:
    # Ellipses become NULs of the same length so that they never end a sentence.
    hidden = _ELLIPSIS.sub(lambda m: "\0" * len(m.group()), item)
    sentences: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(hidden):
        tail = hidden[max(start, m.end() - _WINDOW) : m.end()].rstrip()
        if _ends_sentence(tail, hidden[m.end() : m.end() + 2].lstrip("\"'([")[:1]):
            sentences.append(item[start : m.end()])
            start = m.end()
    sentences.append(item[start:])
    return sentences


def split_sentences(text: str) -> list[str]:
    """Split report prose into sentences, whitespace collapsed, empty pieces dropped.

    Does not split on decimals ("3.5 cm"), common abbreviations ("e.g.", "vs.", "Dr.", "approx.",
    "No. 4") or ellipses; splits list items ("1. ... 2. ...", bullets) apart and drops their markers;
    a newline ends a sentence before a list item or a capitalised line, unless the line before plainly
    continues (ends with a comma or a word such as "of" or "the").
    """
    out: list[str] = []
    for chunk in _lines_to_chunks(text):
        for piece in _INLINE_BULLET.split(_SYMBOL_BULLET.sub("", chunk, count=1)):
            for item in _list_items(piece):
                for sentence in _sentences_in(item):
                    sentence = " ".join(sentence.split())
                    if any(ch.isalnum() for ch in sentence):
                        out.append(sentence)
    return out


@dataclass(frozen=True)
class SplitReport:
    sentences: list[Sentence]  # the first ``max_sentences`` of the report
    total: int  # sentences in the whole report: more than ``len(sentences)`` when capped

    @property
    def truncation(self) -> str | None:
        """One line saying what was left out, None when nothing was."""
        if self.total <= len(self.sentences):
            return None
        return f"report truncated to {len(self.sentences)} of {self.total} sentences"


def split_report(text: str, *, max_sentences: int = MAX_REPORT_SENTENCES) -> SplitReport:
    """Sections, then sentences, in report order; keeps the first ``max_sentences`` and counts all."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    kept: list[Sentence] = []
    total = 0
    for section, body in split_sections(text):
        for sentence in split_sentences(body):
            if total < max_sentences:
                kept.append(Sentence(section, total, sentence))
            total += 1
    return SplitReport(kept, total)


def report_sentences(text: str, *, max_sentences: int = MAX_REPORT_SENTENCES) -> list[Sentence]:
    """Sections, then sentences, in report order; keeps the first ``max_sentences``."""
    return split_report(text, max_sentences=max_sentences).sentences


# --- report files -------------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts the same way
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM optional) or UTF-16/32 with a BOM; newlines normalised to "\\n"."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        bad = data[error.start : error.start + 1].hex()
        hint = ""
        if encoding == "utf-8":
            try:
                data.decode("cp1252")
                hint = "; it may be Windows-1252: convert it with `iconv -f cp1252 -t utf-8`"
            except UnicodeDecodeError:
                pass
        raise ReportError(
            f"not valid {encoding.upper().removesuffix('-SIG')} text (byte 0x{bad} at offset {error.start}{hint})"
        ) from None
    if "\0" in text:
        raise ReportError("not a text file (it contains NUL bytes; UTF-16 needs a byte-order mark)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _section_text(value: object, key: str) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(v.strip() for v in value)
    raise ReportError(f"JSON key {key!r} must be a string or a list of strings, not {type(value).__name__}")


def _compose_sections(obj: dict[str, object]) -> str | None:
    parts = []
    for key, value in obj.items():
        name = _SECTION_NAMES.get(" ".join(key.replace("_", " ").lower().split()))
        if name is not None:
            parts.append(f"{name}: {_section_text(value, key)}")
    return "\n".join(parts) if parts else None


def report_from_json(text: str) -> str:
    """The report text of a JSON document: "report", "text" or section keys."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ReportError("invalid JSON: nested too deeply") from None
    except ValueError as error:  # a number of thousands of digits
        raise ReportError(f"invalid JSON: {' '.join(str(error).split())[:120]}") from None
    if not isinstance(obj, dict):
        raise ReportError(f"JSON report must be an object, not {type(obj).__name__}")
    for key in ("report", "text"):
        if key in obj:
            value = obj[key]
            if isinstance(value, dict) and (composed := _compose_sections(value)) is not None:
                return composed
            return _section_text(value, key)
    composed = _compose_sections(obj)
    if composed is None:
        found = ", ".join(map(str, obj)) or "none"
        raise ReportError(
            "JSON has no report text: expected a 'report' or 'text' string or section keys such as "
            f"'findings' and 'impression' (keys found: {found})"
        )
    return composed


def read_report_file(path: Path) -> str:
    """The report text of a ``.txt`` (or any text) or ``.json`` file; raises ReportError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportError(f"report file is too large ({size / 1024 / 1024:.1f} MB; the limit is 2 MB)")
        data = path.read_bytes()
    except OSError as error:
        raise ReportError(f"cannot read report: {error.strerror or error}") from None
    text = decode_text(data)
    return report_from_json(text) if path.suffix.lower() == ".json" else text


def sidecar_for_image(image_path: Path) -> Path | None:
    """``X.txt`` or ``X.json`` beside a PNG/JPEG image ``X.png``: that image's own report; ``X.txt``
    beside a NIfTI volume ``X.nii``/``X.nii.gz`` (there ``X.json`` is BIDS metadata, not a report)."""
    image_path = Path(image_path)
    name = image_path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        stem = image_path.name[: -len(".nii.gz" if name.endswith(".gz") else ".nii")]
        candidates = [image_path.with_name(stem + suffix) for suffix in (".txt", ".TXT")]
    elif image_path.suffix.lower() in SIDECAR_IMAGE_SUFFIXES:
        candidates = [image_path.with_suffix(s) for s in (".txt", ".json", ".TXT", ".JSON")]
    else:
        return None
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def folder_report(folder: Path) -> Path | None:
    """``report.txt`` or ``report.json`` in a study folder."""
    for name in ("report.txt", "report.json", "REPORT.TXT", "REPORT.JSON"):
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


# --- reports CSV --------------------------------------------------------------------------------------

KEY_COLUMNS = ("study", "study_key", "study_uid", "key", "path", "image_path", "file")
PATH_COLUMNS = ("path", "image_path", "file")
TEXT_COLUMNS = ("report", "text")
METADATA_COLUMNS = ("modality", "body_part", "view", "study_date", "description")
# Columns that name the study an image belongs to, most specific first.
GROUP_COLUMNS = ("group", "study_id", "accession", "accession_number", "case", "case_id", "patient",
                 "patient_id")
_UID_LIKE = re.compile(r"\d+(?:\.\d+){3,}")
_EXAMPLES = 3  # keys or lines named in one warning


@dataclass(frozen=True)
class CsvReport:
    key: str
    text: str
    metadata: dict[str, str] = field(default_factory=dict)
    group: str | None = None  # the group column's value: never stored or shown, only hashed
    line: int = field(default=0, compare=False)  # where the (first) row starts in the CSV


@dataclass(frozen=True)
class CsvMatch:
    """The row that keys an image: the image itself (``own``), or the nearest enclosing folder."""

    report: CsvReport
    keyed: Path  # the file or folder the key names, as discovered (not resolved)
    own: bool


@dataclass
class CsvReports:
    by_path: dict[str, CsvReport]  # absolute, resolved paths of files and folders
    by_key: dict[str, CsvReport]  # other keys (StudyInstanceUID, ...), as given
    base: Path = Path()  # the CSV's folder: path keys are relative to it
    source: str = ""  # the CSV's path, for messages
    group_column: str | None = None
    warnings: list[str] = field(default_factory=list)  # one line each: duplicates, suspect rows
    _real: dict[Path, str] = field(default_factory=dict, repr=False)  # folders' resolved paths

    def match(self, path: Path, root: Path) -> CsvMatch | None:
        """The row keying ``path`` or its nearest enclosing folder, looking no higher than ``root``
        (the indexed folder): a key above the indexed folder would label everything under it."""
        path, root = Path(path), Path(root)
        report = self.by_path.get(os.path.realpath(path))
        if report is not None:
            return CsvMatch(report, path, own=True)
        candidate = path
        while candidate != root and root in candidate.parents:
            candidate = candidate.parent
            if candidate not in self._real:
                self._real[candidate] = os.path.realpath(candidate)
            report = self.by_path.get(self._real[candidate])
            if report is not None:
                return CsvMatch(report, candidate, own=False)
        return None

    def keys_above(self, root: Path) -> list[CsvReport]:
        """Rows keyed by a folder that holds the indexed folder ``root`` (``/``, ``..``)."""
        real_root = Path(os.path.realpath(root))
        return [
            report for key, report in self.by_path.items()
            if Path(key) in real_root.parents or Path(key) in Path(os.path.abspath(root)).parents
        ]

    def rows(self) -> list[CsvReport]:
        """Every (merged) row once, in CSV order."""
        unique = {id(r): r for r in (*self.by_path.values(), *self.by_key.values())}
        return sorted(unique.values(), key=lambda r: r.line)


def _column_name(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


def _explicit_path(key: str) -> bool:
    return "/" in key or "\\" in key or Path(key).suffix.lower() in IMAGE_SUFFIXES


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a key too long to be a file name
        return False


def _merge(old: CsvReport | None, new: CsvReport) -> CsvReport:
    if old is None:
        return new
    text = "\n\n".join(t for t in (old.text, new.text) if t)
    return CsvReport(old.key, text, {**new.metadata, **old.metadata}, old.group, old.line)


def _records(reader: Iterator[list[str]], name: str) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each record; a malformed record is a ReportError naming
    its lines - a quote left open runs over the rows after it, so they are named too."""
    first = 1
    try:
        for row in reader:
            yield first, reader.line_num, row
            first = reader.line_num + 1
    except csv.Error as error:
        lines = f"line {first}" if reader.line_num <= first else f"lines {first}-{reader.line_num}"
        cause = ""
        if reader.line_num > first or "end of data" in str(error):
            cause = f"; a quote opened on line {first} and never closed would swallow the rows after it"
        raise ReportError(f"reports CSV {name}, {lines}: {error}{cause}") from None


def _choose_columns(columns: list[str], header: list[str], group_by: str | None) -> tuple[str, str, str | None]:
    """(key column, text column, group column); see ``load_reports_csv``."""
    key_col = next((c for c in KEY_COLUMNS if c in columns), None)
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    if key_col is None or text_col is None:
        found = ", ".join(h.strip() for h in header)
        if key_col is None:
            missing = "key column (one of " + ", ".join(KEY_COLUMNS) + ")"
        else:
            missing = "text column (report or text)"
        raise ReportError(f"reports CSV has no {missing}; columns found: {found}")
    path_col = next((c for c in PATH_COLUMNS if c in columns), None)
    implicit_group = None
    if key_col == "study" and path_col is not None:
        key_col, implicit_group = path_col, "study"  # images by path, grouped by their study
    if group_by is not None:
        group_col = _column_name(group_by)
        if group_col not in columns:
            found = ", ".join(h.strip() for h in header)
            raise ReportError(f"reports CSV has no column {group_by!r} to group by; columns found: {found}")
    else:
        group_col = implicit_group or next((c for c in GROUP_COLUMNS if c in columns), None)
    if group_col == key_col:
        raise ReportError(f"reports CSV: column {group_col!r} is the key column; it cannot also group")
    return key_col, text_col, group_col


def _looks_like_a_row(line: str, width: int, key_i: int) -> bool:
    """Whether a line inside a quoted field reads as a row of its own: as many fields as the
    header and a key that is a path or a UID."""
    fields = next(csv.reader([line]), [])
    if len(fields) != width:
        return False
    key = fields[key_i].strip()
    return bool(key) and " " not in key and (_explicit_path(key) or bool(_UID_LIKE.fullmatch(key)))


def load_reports_csv(path: Path, *, group_by: str | None = None) -> CsvReports:
    """Reports from a CSV with a key column and a text column; see the module docstring.

    ``group_by`` names the column whose value groups PNG/JPEG images into studies; None takes the
    first present of ``GROUP_COLUMNS`` (or ``study``, when a path column is the key). Rows whose
    quoting is broken refuse the CSV with their line numbers; rows with the same key are joined and
    listed in ``warnings``, as are quoted reports that seem to swallow rows.
    """
    path = Path(path)
    try:
        text = decode_text(path.read_bytes())
    except OSError as error:
        raise ReportError(f"cannot read reports CSV {path}: {error.strerror or error}") from None
    # A long report is over csv's default field limit (128 kB); a report file may hold 2 MB.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_REPORT_BYTES))
    # strict: a stray or unclosed quote is an error, not text that runs into the next rows.
    records = _records(csv.reader(io.StringIO(text, newline=""), strict=True), str(path))
    _, _, header = next(records, (0, 0, []))
    if not header:
        raise ReportError(f"reports CSV {path} is empty (expected a header row)")
    columns = [_column_name(h) for h in header]
    key_col, text_col, group_col = _choose_columns(columns, header, group_by)
    key_i, text_i = columns.index(key_col), columns.index(text_col)
    group_i = columns.index(group_col) if group_col is not None else None
    meta_i = {c: columns.index(c) for c in METADATA_COLUMNS if c in columns}

    base = path.resolve().parent
    reports = CsvReports(by_path={}, by_key={}, base=base, source=str(path), group_column=group_col)
    lines_of: dict[str, tuple[str, list[int]]] = {}  # identity -> (key as written, lines)
    too_wide: list[int] = []
    swallowing: list[str] = []
    for first, last, row in records:
        if len(row) > len(columns) and any(v.strip() for v in row[len(columns):]):
            too_wide.append(first)
            continue
        row += [""] * (len(columns) - len(row))
        key, body = row[key_i].strip(), row[text_i].strip()
        if not key:
            if body:
                raise ReportError(f"reports CSV {path}, line {first}: a report without a {key_col}")
            continue
        if last > first and any(_looks_like_a_row(line, len(columns), key_i)
                                for field_text in row for line in field_text.split("\n")[1:]):
            swallowing.append(f"{first}-{last}")
        metadata = {c: row[i].strip() for c, i in meta_i.items() if row[i].strip()}
        group = (row[group_i].strip() or None) if group_i is not None else None
        report = CsvReport(key, body, metadata, group, first)
        explicit = _explicit_path(key)
        target = base / key.replace("\\", "/")
        resolved = str(target.resolve()) if explicit or _exists(target) else None
        identity = resolved or key
        lines_of.setdefault(identity, (key, []))[1].append(first)
        merged = _merge(reports.by_path.get(resolved) if resolved else reports.by_key.get(key), report)
        if resolved:
            reports.by_path[resolved] = merged
        if not explicit:
            # Bare keys stay keys even when a folder bears the name: folders are often named by UID.
            reports.by_key[key] = merged
    if too_wide:
        shown = ", ".join(map(str, too_wide[:_EXAMPLES])) + (", ..." if len(too_wide) > _EXAMPLES else "")
        raise ReportError(
            f"reports CSV {path}, line{'s' if len(too_wide) > 1 else ''} {shown}: more fields than the "
            f"header's {len(columns)} (a comma in an unquoted report? quote such fields)"
        )
    if swallowing:
        reports.warnings.append(
            f"reports CSV {path}: the quoted report of line(s) {', '.join(swallowing[:_EXAMPLES])} holds "
            "lines that read as rows of their own: a quote left open swallows the rows after it"
        )
    duplicates = [(key, lines) for key, lines in lines_of.values() if len(lines) > 1]
    if duplicates:
        shown = "; ".join(
            f"{key} on lines {', '.join(map(str, lines))}" for key, lines in duplicates[:_EXAMPLES]
        )
        reports.warnings.append(
            f"reports CSV {path}: {len(duplicates)} key(s) on more than one row, their reports "
            f"joined: {shown}{'; ...' if len(duplicates) > _EXAMPLES else ''}"
        )
    return reports
