"""Report text handling: sections, sentences, report files, reports CSV, sidecar convention."""

from __future__ import annotations

import codecs
import csv
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from radsearch.errors import RadsearchError
from radsearch.reports import (
    MAX_REPORT_BYTES,
    MAX_REPORT_SENTENCES,
    CsvReport,
    ReportError,
    Sentence,
    folder_report,
    load_reports_csv,
    read_report_file,
    report_sentences,
    sidecar_for_image,
    split_report,
    split_sections,
    split_sentences,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (the project's ../shared/data is absent)")
    return path


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _assert_faithful(text: str, sentences: list[str]) -> None:
    """The sentences are the text in order; only whitespace, list markers and stray dots fall between them."""
    flat, position = _normalised(text), 0
    for sentence in sentences:
        found = flat.find(sentence, position)
        assert found >= 0, sentence
        assert re.fullmatch(r"[\s\d().\u2022*-]*", flat[position:found]), flat[position:found]
        position = found + len(sentence)
    assert re.fullmatch(r"[\s\d().\u2022*-]*", flat[position:]), flat[position:]


# --- sections -----------------------------------------------------------------------------------------


def test_sections_in_order_with_preamble():
    text = "Chest, 2 views.\nFINDINGS: The heart is normal.\nIMPRESSION: Normal chest."
    assert split_sections(text) == [
        ("REPORT", "Chest, 2 views."),
        ("FINDINGS", "The heart is normal."),
        ("IMPRESSION", "Normal chest."),
    ]


def test_headings_case_insensitive_inline_and_synonyms():
    text = "Clinical information: cough. Findings: Lungs clear. Opinion: Normal. Reason for exam: fever."
    assert split_sections(text) == [
        ("HISTORY", "cough."),
        ("FINDINGS", "Lungs clear."),
        ("IMPRESSION", "Normal."),
        ("INDICATION", "fever."),
    ]


@pytest.mark.parametrize(
    ("heading", "canonical"),
    [
        ("FINDINGS", "FINDINGS"),
        ("Impression", "IMPRESSION"),
        ("Conclusion", "CONCLUSION"),
        ("Comparison", "COMPARISON"),
        ("Indication", "INDICATION"),
        ("History", "HISTORY"),
        ("Clinical History", "HISTORY"),
        ("clinical  history", "HISTORY"),
        ("Technique", "TECHNIQUE"),
        ("Examination", "EXAMINATION"),
        ("Exam", "EXAMINATION"),
        ("Recommendation", "RECOMMENDATION"),
        ("Recommendations", "RECOMMENDATION"),
    ],
)
def test_each_heading_maps_to_its_section(heading, canonical):
    assert split_sections(f"{heading}: some text") == [(canonical, "some text")]


def test_heading_alone_on_its_line_needs_no_colon():
    assert split_sections("Findings\nThe heart is normal.\nImpression\nNormal study.") == [
        ("FINDINGS", "The heart is normal."),
        ("IMPRESSION", "Normal study."),
    ]


def test_upper_case_heading_counts_mid_sentence_lower_case_does_not():
    assert split_sections("no effusion IMPRESSION: normal") == [("REPORT", "no effusion"), ("IMPRESSION", "normal")]
    text = "The findings: are nonspecific. No impression: here."
    assert split_sections(text) == [("REPORT", text)]


def test_a_singular_finding_label_inside_a_line_is_no_heading():
    """covid_cxr notes: "Finding: COVID-19." labels the case; it opens no FINDINGS section."""
    text = "Chest X-ray, PA view. Finding: COVID-19. Patchy opacities in both lungs."
    assert split_sections(text) == [("REPORT", text)]
    assert split_sections("Finding: Normal.\nImpression: Normal study.") == [
        ("FINDINGS", "Normal."), ("IMPRESSION", "Normal study.")]
    assert split_sections("Heart normal. FINDING: Nodule.") == [("REPORT", "Heart normal."), ("FINDINGS", "Nodule.")]


def test_empty_sections_dropped_and_crlf_handled():
    assert split_sections("FINDINGS:\r\nIMPRESSION:\r\n  Normal.\r\n") == [("IMPRESSION", "Normal.")]
    assert split_sections("   \n") == []


def test_iu_xray_xml_sections_are_recovered():
    """Real IU chest X-ray reports: compose their labelled parts and get the same sections back."""
    archive = _data("iu_xray_reports/NLMCXR_reports.tgz")
    checked = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            parts = [(el.get("Label"), (el.text or "").strip()) for el in root.iter("AbstractText")]
            parts = [(label, body) for label, body in parts if body]
            text = "\n".join(f"{label}: {body}" for label, body in parts)
            assert split_sections(text) == parts, member.name
            for label, body in parts:
                sentences = split_sentences(body)
                assert 1 <= len(sentences) <= 30
                _assert_faithful(body, sentences)
            checked += 1
            if checked == 25:
                break
    assert checked == 25


# --- sentences ----------------------------------------------------------------------------------------


def test_plain_sentences():
    assert split_sentences("The heart is normal in size.  The lungs\tare clear!  Effusion? No.") == [
        "The heart is normal in size.",
        "The lungs are clear!",
        "Effusion?",
        "No.",
    ]


def test_decimals_do_not_split():
    assert split_sentences("A 3.5 cm nodule and a 0.7 x 0.3 cm lesion. No effusion.") == [
        "A 3.5 cm nodule and a 0.7 x 0.3 cm lesion.",
        "No effusion.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Nonspecific findings, e.g. Pneumonia or atelectasis.",
        "Nonspecific findings, i.e. Atelectasis.",
        "Atelectasis vs. Pneumonia.",
        "Discussed with Dr. Smith.",
        "Discussed with Dr. J. Smith.",
        "Lesion measures approx. 3 cm.",
        "See image No. 4 for the lesion.",
        "Mass measures max. 4 cm.",
    ],
)
def test_abbreviations_do_not_split(sentence):
    assert split_sentences(f"{sentence} The rest is normal.") == [sentence, "The rest is normal."]


def test_abbreviation_like_words_still_end_sentences():
    assert split_sentences("Pneumothorax? No. The rest is normal.") == ["Pneumothorax?", "No.", "The rest is normal."]
    assert split_sentences("Follow-up in 5 min. No change.") == ["Follow-up in 5 min.", "No change."]


def test_vertebral_levels_end_sentences():
    assert split_sentences("Disc bulge at C5-6. No stenosis at L4-5. Normal T12.") == [
        "Disc bulge at C5-6.",
        "No stenosis at L4-5.",
        "Normal T12.",
    ]


def test_inline_numbered_list_items_are_separate_and_lose_their_numbers():
    assert split_sentences("1. No acute process. 2. Stable cardiomegaly.") == [
        "No acute process.",
        "Stable cardiomegaly.",
    ]
    assert split_sentences("1. Cardiomegaly 2. Small left effusion 3. No pneumothorax") == [
        "Cardiomegaly",
        "Small left effusion",
        "No pneumothorax",
    ]
    assert split_sentences("No effusion. 1. No acute pulmonary disease.") == [
        "No effusion.",
        "No acute pulmonary disease.",
    ]


def test_numbers_that_are_not_list_markers_stay():
    assert split_sentences("Grade 3. No effusion.") == ["Grade 3.", "No effusion."]
    assert split_sentences("Lesions in 2 places. 3 nodules too.") == ["Lesions in 2 places.", "3 nodules too."]


def test_line_lists_and_bullets():
    assert split_sentences("1. Small effusion\n2. Atelectasis\n3) No pneumothorax") == [
        "Small effusion",
        "Atelectasis",
        "No pneumothorax",
    ]
    assert split_sentences("- Heart normal\n* Lungs clear\n\u2022 No effusion") == [
        "Heart normal",
        "Lungs clear",
        "No effusion",
    ]
    assert split_sentences("\u2022 Left effusion. \u2022 Right effusion.") == ["Left effusion.", "Right effusion."]


def test_newlines_end_telegraphic_lines_but_not_wrapped_prose():
    assert split_sentences("Heart size normal\nLungs clear\nNo effusion") == [
        "Heart size normal",
        "Lungs clear",
        "No effusion",
    ]
    assert split_sentences("The heart is normal in size and the\nlungs are clear. Changes of\nThe spine.") == [
        "The heart is normal in size and the lungs are clear.",
        "Changes of The spine.",
    ]


def test_ellipses_do_not_split():
    assert split_sentences("Possible mass... Recommend CT. Nodule \u2026 Unclear.") == [
        "Possible mass... Recommend CT.",
        "Nodule \u2026 Unclear.",
    ]


def test_whitespace_collapsed_and_empty_pieces_dropped():
    assert split_sentences("  The   heart\n\n\n is normal . . \n") == ["The heart", "is normal . ."]
    assert split_sentences(" \n\t ") == []
    assert split_sentences("Normal. . .") == ["Normal. . ."]


def test_iu_xray_reports_split_sanely():
    """Real IU chest X-ray reports (annotation.json): nothing invented, list numbers gone, sane counts."""
    reports = json.loads(_data("iu_xray_reports/annotation.json").read_text())["test"][:40]
    counts = []
    for report in reports:
        text = report["report"]
        sentences = split_sentences(text)
        counts.append(len(sentences))
        _assert_faithful(text, sentences)
        assert not any(re.match(r"\d{1,2}\. ", s) for s in sentences)
    assert 1 <= min(counts) and max(counts) <= 20
    assert 3 <= sum(counts) / len(counts) <= 10
    by_id = {r["id"]: r["report"] for r in reports}
    assert split_sentences(by_id["2034"])[-2:] == [
        "No acute cardiopulmonary abnormality.",
        "Hyperlucent lungs, XXXX related to cachexia and probable pectus excavatum deformity.",
    ]


def test_medpix_captions_split_sanely():
    """Real MedPix captions: prose with decimals and measurements, nothing lost or reordered."""
    with _data("medpix2/manifest.csv").open(newline="", encoding="utf-8") as handle:
        captions = [row["text"] for row in csv.DictReader(handle)]
    total = 0
    for caption in captions:
        sentences = split_sentences(caption)
        assert sentences or not caption.strip()
        _assert_faithful(caption, sentences)
        total += len(sentences)
        for first, second in zip(sentences, sentences[1:]):
            assert not (re.search(r"\d\.$", first) and re.match(r"\d", second))  # no split inside a decimal
    assert 1.2 <= total / len(captions) <= 4


# --- report_sentences ---------------------------------------------------------------------------------


def test_report_sentences_sections_then_sentences():
    text = "EXAMINATION: Chest X-ray.\nFINDINGS: The heart is normal. The lungs are clear.\nIMPRESSION: Normal."
    assert report_sentences(text) == [
        Sentence("EXAMINATION", 0, "Chest X-ray."),
        Sentence("FINDINGS", 1, "The heart is normal."),
        Sentence("FINDINGS", 2, "The lungs are clear."),
        Sentence("IMPRESSION", 3, "Normal."),
    ]


def test_report_of_10000_sentences_is_capped():
    text = "FINDINGS: " + " ".join(f"Finding number {i} is stable." for i in range(10_000))
    sentences = report_sentences(text)
    assert len(sentences) == 2000
    assert sentences[-1] == Sentence("FINDINGS", 1999, "Finding number 1999 is stable.")
    assert len(report_sentences(text, max_sentences=10_000)) == 10_000
    assert len(report_sentences(text, max_sentences=5)) == 5
    with pytest.raises(ValueError):
        report_sentences(text, max_sentences=0)


def test_split_report_counts_what_the_cap_leaves_out():
    text = "FINDINGS: " + " ".join(f"Finding number {i} is stable." for i in range(10_000))
    capped = split_report(text)
    assert (len(capped.sentences), capped.total) == (MAX_REPORT_SENTENCES, 10_000)
    assert capped.truncation == "report truncated to 2000 of 10000 sentences"
    assert split_report("IMPRESSION: Normal.").truncation is None


# --- report files -------------------------------------------------------------------------------------

REPORT = "FINDINGS: Lesion 5 mm, caf\u00e9-au-lait spots.\nIMPRESSION: Normal."


@pytest.mark.parametrize(
    "data",
    [
        REPORT.encode("utf-8"),
        codecs.BOM_UTF8 + REPORT.encode("utf-8"),
        REPORT.encode("utf-16"),
        codecs.BOM_UTF16_BE + REPORT.encode("utf-16-be"),
        REPORT.encode("utf-32"),
        REPORT.replace("\n", "\r\n").encode("utf-8"),
    ],
    ids=["utf8", "utf8-bom", "utf16-le-bom", "utf16-be-bom", "utf32-bom", "crlf"],
)
def test_read_text_encodings(tmp_path, data):
    path = tmp_path / "report.txt"
    path.write_bytes(data)
    assert read_report_file(path) == REPORT


def test_cp1252_bytes_are_refused_with_one_clear_line(tmp_path):
    path = tmp_path / "report.txt"
    path.write_bytes("Lesion 5 mm, caf\u00e9-au-lait spots.".encode("cp1252"))
    with pytest.raises(ReportError) as info:
        read_report_file(path)
    message = str(info.value)
    assert message.startswith("not valid UTF-8 text (byte 0xe9 at offset 16")
    assert "Windows-1252" in message and "\n" not in message
    assert isinstance(info.value, RadsearchError)


def test_utf16_without_bom_is_refused(tmp_path):
    path = tmp_path / "report.txt"
    path.write_bytes("Normal chest.".encode("utf-16-le"))
    with pytest.raises(ReportError, match="NUL bytes"):
        read_report_file(path)


def test_oversize_file_is_refused(tmp_path):
    path = tmp_path / "report.txt"
    path.write_bytes(b"Normal. " * (300 * 1024))  # 2.3 MB
    with pytest.raises(ReportError, match=r"too large \(2\.3 MB; the limit is 2 MB\)"):
        read_report_file(path)


def test_missing_file_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="cannot read report"):
        read_report_file(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"report": "FINDINGS: Normal."}, "FINDINGS: Normal."),
        ({"text": "Normal chest."}, "Normal chest."),
        (
            {"id": "7", "findings": "The heart is normal.", "impression": "Normal."},
            "FINDINGS: The heart is normal.\nIMPRESSION: Normal.",
        ),
        (
            {"Clinical_History": "Cough", "IMPRESSION": ["No effusion.", "No pneumothorax."]},
            "HISTORY: Cough\nIMPRESSION: No effusion.\nNo pneumothorax.",
        ),
        ({"report": {"findings": "Clear lungs.", "opinion": "Normal."}}, "FINDINGS: Clear lungs.\nIMPRESSION: Normal."),
    ],
)
def test_read_json_reports(tmp_path, document, expected):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    text = read_report_file(path)
    assert text == expected
    assert [s.section for s in report_sentences(text)][-1] in {"IMPRESSION", "FINDINGS", "REPORT"}


def test_json_sections_split_back():
    path_text = "FINDINGS: The heart is normal.\nIMPRESSION: Normal."
    assert [name for name, _ in split_sections(path_text)] == ["FINDINGS", "IMPRESSION"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"report": "x",}', r"^invalid JSON: Expecting property name enclosed in double quotes at line 1 column 16$"),
        ("[1, 2]", r"^JSON report must be an object, not list$"),
        ('{"id": 1, "image_path": "a.png"}', r"no report text: .* \(keys found: id, image_path\)$"),
        ('{"findings": 3}', r"^JSON key 'findings' must be a string or a list of strings, not int$"),
    ],
)
def test_bad_json_reports(tmp_path, content, message):
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError, match=message):
        read_report_file(path)


# --- sidecar convention -------------------------------------------------------------------------------


def test_sidecar_for_image(tmp_path):
    image = tmp_path / "case1.png"
    image.write_bytes(b"")
    assert sidecar_for_image(image) is None
    (tmp_path / "case1.json").write_text('{"text": "x"}')
    assert sidecar_for_image(image) == tmp_path / "case1.json"
    (tmp_path / "case1.txt").write_text("x")
    assert sidecar_for_image(image) == tmp_path / "case1.txt"  # .txt before .json
    (tmp_path / "scan.dcm").write_bytes(b"")
    (tmp_path / "scan.txt").write_text("x")
    assert sidecar_for_image(tmp_path / "scan.dcm") is None  # DICOM studies use the folder's report


def test_folder_report(tmp_path):
    assert folder_report(tmp_path) is None
    (tmp_path / "report.json").write_text('{"text": "x"}')
    assert folder_report(tmp_path) == tmp_path / "report.json"
    (tmp_path / "report.txt").write_text("x")
    assert folder_report(tmp_path) == tmp_path / "report.txt"


# --- reports CSV --------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_reports_csv_paths_keys_metadata_and_duplicates(tmp_path):
    (tmp_path / "studies" / "case_a").mkdir(parents=True)
    (tmp_path / "1.2.840.99").mkdir()  # a folder named by its StudyInstanceUID
    table = _write_csv(
        tmp_path / "reports.csv",
        [
            ["Study", "Report", "Modality", "Body Part", "Extra"],
            ["studies/case_a", "FINDINGS: Normal.", "CT", "CHEST", "ignored"],
            ["images\\xray1.png", "Effusion.", "", "", ""],
            ["1.2.840.1234", "Old report.", "MR", "", ""],
            ["1.2.840.1234", "Addendum.", "", "HEAD", ""],
            ["1.2.840.99", "Named folder.", "", "", ""],
            ["", "", "", "", ""],
        ],
    )
    reports = load_reports_csv(table)
    case_a = reports.match(tmp_path / "studies" / "case_a", tmp_path)
    assert case_a.report == CsvReport("studies/case_a", "FINDINGS: Normal.",
                                      {"modality": "CT", "body_part": "CHEST"})
    assert case_a.own
    # A file inside a keyed folder belongs to that folder's study.
    inside = reports.match(tmp_path / "studies" / "case_a" / "IM1.dcm", tmp_path)
    assert inside.report is case_a.report and not inside.own
    assert inside.keyed == tmp_path / "studies" / "case_a"
    assert reports.match(tmp_path / "images" / "xray1.png", tmp_path).report.text == "Effusion."
    assert reports.match(tmp_path / "images" / "other.png", tmp_path) is None
    uid = reports.by_key["1.2.840.1234"]
    assert uid.text == "Old report.\n\nAddendum."
    assert uid.metadata == {"modality": "MR", "body_part": "HEAD"}
    assert reports.match(tmp_path / "1.2.840.99", tmp_path).report.text == "Named folder."
    assert reports.by_key["1.2.840.99"].text == "Named folder."
    assert set(reports.by_key) == {"1.2.840.1234", "1.2.840.99"}
    assert all(Path(p).is_absolute() for p in reports.by_path)
    # Joined duplicates are said, with their lines.
    assert len(reports.warnings) == 1
    assert "1 key(s) on more than one row" in reports.warnings[0]
    assert "1.2.840.1234 on lines 4, 5" in reports.warnings[0]


def test_reports_csv_with_bom_and_alternative_columns(tmp_path):
    table = _write_csv(tmp_path / "r.csv", [["image_path", "text"], ["a.jpg", "Normal."]], encoding="utf-8-sig")
    reports = load_reports_csv(table)
    assert reports.by_path == {str((tmp_path / "a.jpg").resolve()): CsvReport("a.jpg", "Normal.", {})}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["uid", "report"], r"no key column \(one of study, .*file\); columns found: uid, report$"),
        (["study", "notes"], r"no text column \(report or text\); columns found: study, notes$"),
    ],
)
def test_reports_csv_missing_columns(tmp_path, header, message):
    table = _write_csv(tmp_path / "r.csv", [header, ["x", "y"]])
    with pytest.raises(ReportError, match=message):
        load_reports_csv(table)


def test_reports_csv_row_without_key(tmp_path):
    table = _write_csv(tmp_path / "r.csv", [["study", "report"], ["", "Orphan report."]])
    with pytest.raises(ReportError, match="line 2: a report without a study"):
        load_reports_csv(table)


def test_reports_csv_holds_long_reports_and_refuses_longer_fields_in_one_line(tmp_path):
    # csv's default field limit is 128 kB; a report may be as long as a report file (2 MB).
    table = tmp_path / "reports.csv"
    long_text = "Stable nodule. " * 20_000  # 300 kB
    table.write_text(f"study,report\n1.2.3,{long_text}\n", encoding="utf-8")
    assert load_reports_csv(table).by_key["1.2.3"].text == long_text.strip()

    table.write_text(f"study,report\n1.2.3,ok\n4.5.6,{'x' * (MAX_REPORT_BYTES + 1)}\n",
                     encoding="utf-8")
    with pytest.raises(ReportError, match=r"^reports CSV \S+reports.csv, line 3: field larger than field limit"):
        load_reports_csv(table)


@pytest.mark.parametrize(
    ("content", "lines"),
    [
        # The quote never closes: every row after it would become part of line 2's report.
        ('study,report\na.png,"Normal.\nb.png,Effusion.\n', "lines 2-3"),
        # A later quote closes it: rows 3 and 4 vanish into line 2's report.
        ('study,report\na.png,"Normal.\nb.png,Effusion.\nc.png,"Pneumonia."\n', "lines 2-4"),
        ('study,report\na.png,"Normal" and more\n', "line 2"),
    ],
)
def test_reports_csv_broken_quotes_are_refused_by_line(tmp_path, content, lines):
    table = tmp_path / "reports.csv"
    table.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError, match=rf"reports CSV \S+reports.csv, {lines}: "):
        load_reports_csv(table)


def test_reports_csv_quoted_report_that_reads_as_rows_is_a_warning(tmp_path):
    # Valid CSV, but the quote that closes on line 3 was meant to close on line 2.
    table = tmp_path / "reports.csv"
    table.write_text('image_path,report\na.png,"Normal.\nb.png,Effusion."\nc.png,Fine.\n'
                     'd.png,"Two lines,\nboth prose."\n', encoding="utf-8")
    reports = load_reports_csv(table)
    assert [row.key for row in reports.rows()] == ["a.png", "c.png", "d.png"]
    assert len(reports.warnings) == 1
    assert "line(s) 2-3 holds lines that read as rows of their own" in reports.warnings[0]


def test_reports_csv_row_wider_than_its_header_is_refused(tmp_path):
    table = tmp_path / "reports.csv"
    table.write_text("image_path,report\na.png,Fine.,\nb.png,No effusion, no pneumothorax.\n",
                     encoding="utf-8")
    with pytest.raises(ReportError, match=r"line 3: more fields than the header's 2"):
        load_reports_csv(table)


def test_reports_csv_group_column(tmp_path):
    rows = [["image_path", "text", "case_id"], ["a.png", "One.", "MPX1"], ["b.png", "Two.", "MPX1"],
            ["c.png", "Three.", ""]]
    reports = load_reports_csv(_write_csv(tmp_path / "r.csv", rows))
    assert reports.group_column == "case_id"
    assert [(row.key, row.group) for row in reports.rows()] == [
        ("a.png", "MPX1"), ("b.png", "MPX1"), ("c.png", None)]
    assert reports.warnings == []  # rows of one group are not duplicates

    # "study" beside a path column groups the images; --group-by chooses any column.
    rows = [["study", "path", "report", "site"], ["S1", "a.png", "One.", "north"]]
    assert load_reports_csv(_write_csv(tmp_path / "s.csv", rows)).rows()[0].group == "S1"
    chosen = load_reports_csv(tmp_path / "s.csv", group_by="Site")
    assert (chosen.group_column, chosen.rows()[0].group) == ("site", "north")
    with pytest.raises(ReportError, match="no column 'accession' to group by; columns found: study"):
        load_reports_csv(tmp_path / "s.csv", group_by="accession")


def test_reports_csv_keys_above_the_indexed_folder(tmp_path):
    root = tmp_path / "archive" / "studies"
    (root / "case_a").mkdir(parents=True)
    rows = [["path", "report"], ["/", "Everything."], ["archive", "Parent."],
            ["archive/studies", "The root."], ["archive/studies/case_a", "A study."]]
    reports = load_reports_csv(_write_csv(tmp_path / "r.csv", rows))
    assert [row.key for row in reports.keys_above(root)] == ["/", "archive"]
    # The nearest key at or below the root wins; keys above it never match.
    assert reports.match(root / "case_a" / "x.png", root).report.key == "archive/studies/case_a"
    assert reports.match(root / "other" / "x.png", root).report.key == "archive/studies"
