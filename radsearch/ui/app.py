"""The radsearch explorer, a Streamlit app: each page is a thin layer over one public function.

Started by ``radsearch ui`` (``radsearch.ui.serve``), which passes the index, back end and URL after
``--``. Text read from the files (descriptions, reports, paths) is shown with ``st.text`` or in
tables, never as Markdown, so a report cannot restyle the page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

import radsearch
from radsearch.errors import RadsearchError
from radsearch.filters import Filters
from radsearch.label_sets import LABEL_SETS
from radsearch.previews import image_preview, split_image_ref
from radsearch.store import default_index_path

T = TypeVar("T")
STUDY_KEY = "study_ref"  # session state: the study the Study page shows


def _settings() -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="radsearch ui")
    parser.add_argument("--index", type=Path)
    parser.add_argument("--backend")
    parser.add_argument("--url")
    args = parser.parse_args(sys.argv[1:])
    # Resolved once: an uploaded file is then classified with this index's model, not the default.
    return {"index": args.index or default_index_path(), "backend": args.backend, "url": args.url}


SETTINGS = _settings()
INDEX_ONLY = {"index": SETTINGS["index"]}  # show/stats/classify read the index's catalog


def attempt(call: Callable[[], T]) -> T | None:
    """Run a library call; its one-line error is shown on the page instead of a traceback."""
    try:
        return call()
    except RadsearchError as error:
        st.error(str(error))
        return None


@st.cache_data(max_entries=1024, show_spinner=False)
def _preview(path: str, frame: int, modified: float) -> Any:
    del modified  # part of the cache key only: a re-written file is shown anew
    return image_preview(path, frame)


def show_image(path: str, frame: int, caption: str) -> None:
    try:
        st.image(_preview(path, frame, Path(path).stat().st_mtime), caption=caption,
                 use_container_width=True)
    except (OSError, RadsearchError) as error:
        st.caption(f"no preview: {type(error).__name__ if isinstance(error, OSError) else error}")


def filters_form(key: str) -> Filters | None:
    with st.expander("Filters"):
        left, right = st.columns(2)
        modality = left.text_input("Modality", key=f"{key}-modality", placeholder="CT, MR, CR, XRAY ...")
        body_part = right.text_input("Body part", key=f"{key}-body", placeholder="CHEST, HEAD ...")
        view = left.text_input("View", key=f"{key}-view", placeholder="PA, AP, AXIAL ...")
        date_from = right.text_input("Date from", key=f"{key}-from", placeholder="YYYY-MM-DD")
        date_to = right.text_input("Date to", key=f"{key}-to", placeholder="YYYY-MM-DD")
    return attempt(lambda: Filters(modality=modality or None, body_part=body_part or None,
                                   view=view or None, date_from=date_from or None,
                                   date_to=date_to or None))


def open_study_button(study: str, key: str) -> None:
    if st.button("Open study", key=key):
        st.session_state[STUDY_KEY] = study
        st.switch_page(STUDY_PAGE)


def study_card(rank: int, hit: Any, score_label: str, score: float, key: str) -> None:
    with st.container(border=True):
        st.subheader(f"{rank}. {hit.study}", anchor=False)
        facts = [f"{score_label} {score:.3f}", f"date {hit.study_date or '-'}",
                 " ".join(hit.modalities) or "-", " ".join(hit.body_parts)]
        st.text("   ".join(f for f in facts if f))
        if hit.description:
            st.text(hit.description)
        for sentence in getattr(hit, "sentences", []):
            st.text(f"[{sentence.section}] {sentence.text}   ({sentence.score:.3f})")
        if hit.images:
            columns = st.columns(min(len(hit.images), 5))
            for column, image in zip(columns, hit.images):
                with column:
                    detail = " ".join(v for v in (image.modality, image.view) if v)
                    score_text = f" {image.score:.3f}" if image.score else ""
                    show_image(image.path, image.frame, f"{detail}{score_text}")
        open_study_button(hit.study, key)


def search_results(results: Any) -> None:
    if not results.hits:
        st.info("No study matches.")
    for rank, hit in enumerate(results.hits, 1):
        study_card(rank, hit, "score", hit.score, f"open-{rank}-{hit.study}")


def search_page() -> None:
    st.title("Text search")
    with st.form("search"):
        text = st.text_input("Find studies showing", placeholder="right lower lobe consolidation")
        left, right = st.columns(2)
        target = left.radio("Search", ["images", "reports"], horizontal=True,
                            format_func={"images": "images (text to image)",
                                         "reports": "report sentences"}.get)
        k = right.number_input("Studies", min_value=1, max_value=100, value=10)
        filters = filters_form("search")
        submitted = st.form_submit_button("Search")
    if submitted:
        # Kept across reruns: a result's "Open study" button is a rerun without the form.
        st.session_state["search-results"] = None if filters is None else attempt(
            lambda: radsearch.search(text, k=int(k), target=target, filters=filters, **SETTINGS))
    if st.session_state.get("search-results"):
        search_results(st.session_state["search-results"])


@contextmanager
def query_file(upload: Any, ref: str) -> Iterator[str | Path]:
    """The query: an upload as a file the readers can open (they detect the kind by content),
    removed afterwards - it is a patient's image - or else the typed reference."""
    if upload is None:
        yield ref.strip()
        return
    with tempfile.TemporaryDirectory(prefix="radsearch-ui-") as folder:
        path = Path(folder) / Path(upload.name).name
        path.write_bytes(upload.getvalue())
        yield path


def similar_page() -> None:
    st.title("Similar cases")
    with st.form("similar"):
        upload = st.file_uploader("An image file (DICOM, PNG, JPEG)")
        ref = st.text_input("or an indexed study, series or image (UID, key or file)")
        k = st.number_input("Studies", min_value=1, max_value=100, value=10)
        filters = filters_form("similar")
        submitted = st.form_submit_button("Find similar cases")
    if submitted:
        st.session_state["similar-results"] = None
        if upload is None and not ref.strip():
            st.error("give an image file or an indexed study")
        elif filters is not None:
            with query_file(upload, ref) as query:
                st.session_state["similar-results"] = attempt(
                    lambda: radsearch.similar(query, k=int(k), filters=filters, **SETTINGS))
    if st.session_state.get("similar-results"):
        search_results(st.session_state["similar-results"])


def _label_set_choice(key: str) -> tuple[str | None, str | None]:
    """(labels, label_set) from the page: typed labels win over a built-in set."""
    labels = st.text_input("Labels, comma-separated", key=f"{key}-labels",
                           placeholder="pneumonia, pleural effusion, normal")
    label_set = st.selectbox("or a built-in label set", ["", *LABEL_SETS], key=f"{key}-set")
    return labels.strip() or None, label_set or None


def label_page() -> None:
    st.title("Studies with a finding")
    with st.form("label"):
        label = st.text_input("Label", placeholder="pleural effusion")
        min_prob = st.slider("Least probability", 0.05, 0.95, 0.5, 0.05)
        labels, label_set = _label_set_choice("label")
        limit = st.number_input("At most (0: every match)", min_value=0, value=50)
        filters = filters_form("label")
        submitted = st.form_submit_button("Find studies")
    if submitted:
        st.session_state["label-results"] = None if filters is None else attempt(lambda: radsearch.label_query(
            label, min_prob=min_prob, labels=labels, label_set=label_set, filters=filters,
            limit=int(limit) or None, **SETTINGS))
    results = st.session_state.get("label-results")
    if not results:
        return
    st.text(f"{len(results.hits)} studies with p({results.label}) >= {results.min_prob:.2f} "
            f"({results.label_set}, {results.kind}, {results.model})")
    for rank, hit in enumerate(results.hits, 1):
        study_card(rank, hit, "p", hit.probability, f"label-open-{rank}-{hit.study}")


def classify_page() -> None:
    st.title("Zero-shot classification")
    with st.form("classify"):
        upload = st.file_uploader("An image file (DICOM, PNG, JPEG)")
        ref = st.text_input("or an indexed study (UID, key or file)",
                            value=st.session_state.get(STUDY_KEY, ""))
        labels, label_set = _label_set_choice("classify")
        findings = st.checkbox("Score each label on its own (label vs no label)")
        submitted = st.form_submit_button("Classify")
    if not submitted:
        return
    if upload is None and not ref.strip():
        st.error("give an image file or an indexed study")
        return
    if labels is None and label_set is None:
        label_set = "chexpert"
    # A file is embedded with the index's model, as `radsearch classify FILE --index` does.
    with query_file(upload, ref) as query:
        result = attempt(lambda: radsearch.classify(query, labels=labels, label_set=label_set,
                                                    findings=findings, **INDEX_ONLY))
    if result is None:
        return
    kind = "independent probabilities" if result.kind == "findings" else "probabilities sum to 1"
    st.text(f"{result.label_set} ({kind}), {result.model}: most probable {result.top}")
    st.dataframe(
        [{"label": s.label, "probability": round(s.probability, 3), "cosine": round(s.similarity, 3)}
         for s in result.scores],
        hide_index=True, use_container_width=True,
    )


def study_page() -> None:
    st.title("Study")
    ref = st.text_input("Study key, UID, accession number or file",
                        value=st.session_state.get(STUDY_KEY, ""))
    if not ref.strip():
        return
    st.session_state[STUDY_KEY] = ref.strip()
    detail = attempt(lambda: radsearch.show(ref.strip(), **INDEX_ONLY))
    if detail is None:
        return
    st.text(f"study {detail.study}   date {detail.study_date or '-'}   {detail.description or ''}")
    for keyword, values in detail.identifiers.items():
        st.text(f"{keyword}: {' | '.join(values)}")
    for series in detail.series:
        with st.container(border=True):
            st.text(f"series {series.series}   {series.modality or '-'} {series.body_part or ''} "
                    f"{series.view or ''} {series.description or ''}   ({len(series.images)} images)")
            shown = series.images[:: max(1, len(series.images) // 6)][:6]
            for column, image in zip(st.columns(max(1, len(shown))), shown):
                with column:
                    path, frame = split_image_ref(image)
                    show_image(path, frame, Path(image).name)
    for report in detail.reports:
        with st.container(border=True):
            st.text(f"report ({report.source})")
            st.text(report.text)


def index_page() -> None:
    st.title("Index")
    data = attempt(lambda: radsearch.stats(**INDEX_ONLY))
    if data is None:
        return
    counts = ("studies", "series", "images", "reports", "sentences", "failed", "skipped")
    for column, key in zip(st.columns(len(counts)), counts):
        column.metric(key, f"{data[key]:,}")
    st.text(f"model {data['model']['name']} ({data['model']['dim']}-d)   back end {data['backend']}"
            f"   index {data['index']}")
    if SETTINGS["backend"] or SETTINGS["url"]:
        st.text(f"searches go to: {SETTINGS['backend'] or 'qdrant'} {SETTINGS['url'] or ''}")
    st.json(data, expanded=False)


st.set_page_config(page_title="radsearch", layout="wide")
STUDY_PAGE = st.Page(study_page, title="Study", url_path="study")
navigation = st.navigation([
    st.Page(search_page, title="Text search", url_path="search", default=True),
    st.Page(similar_page, title="Similar cases", url_path="similar"),
    st.Page(label_page, title="Studies with a finding", url_path="label"),
    st.Page(classify_page, title="Classify", url_path="classify"),
    STUDY_PAGE,
    st.Page(index_page, title="Index", url_path="index"),
])
navigation.run()
