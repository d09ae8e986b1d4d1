"""The explorer's question pages, each a thin layer over one public function: text search, similar
cases, studies with a finding, zero-shot classification, and the index. Every field is kept in the
URL (``?q=...``), so a question can be shared and Back returns to it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

import radsearch
from radsearch.filters import Filters
from radsearch.label_sets import LABEL_SETS
from radsearch.previews import image_preview, split_image_ref
from radsearch.ui.common import ANSWER_TTL, attempt, catalog_stamp, settings
from radsearch.ui.overview import index_overview, last_run_counts, last_run_summary
from radsearch.ui.results import PAGE_SIZE, results_grid

URL = "query-params"  # bind a widget to the URL parameter named by its key
CHEST_RADIOGRAPHS = {"CR", "DX", "XRAY", "X-RAY", "DR"}
SET_NOTES = {
    "chexpert": "chexpert: 14 findings of chest radiographs",
    "modality": "modality: CT, MRI, X-ray, ...",
    "body-region": "body-region: chest, head, abdomen, ...",
    "plane": "plane: axial, coronal, sagittal, ...",
}
CHEXPERT_NOTE = ("CheXpert's findings describe chest radiographs (CR/DX): on CT, MR or other "
                 "images their probabilities mean little.")


def filters_form() -> Filters | None:
    with st.expander("Filters"):
        left, right = st.columns(2)
        modality = left.text_input("Modality", key="modality", bind=URL,
                                   placeholder="CT, MR, CR, XRAY ...")
        body_part = right.text_input("Body part", key="body_part", bind=URL,
                                     placeholder="CHEST, HEAD ...")
        view = left.text_input("View", key="view", bind=URL, placeholder="PA, AP, AXIAL ...")
        date_from = right.text_input("Date from", key="date_from", bind=URL, placeholder="YYYY-MM-DD")
        date_to = right.text_input("Date to", key="date_to", bind=URL, placeholder="YYYY-MM-DD")
    return attempt(lambda: Filters(modality=modality or None, body_part=body_part or None,
                                   view=view or None, date_from=date_from or None,
                                   date_to=date_to or None))


# -- text search ------------------------------------------------------------------------------


@st.cache_data(max_entries=256, ttl=ANSWER_TTL, show_spinner="Searching ...")
def _search(text: str, k: int, target: str, filters: Filters, stamp: float) -> Any:
    del stamp
    return radsearch.search(text, k=k, target=target, filters=filters, **settings())


def search_page() -> None:
    st.title("Text search")
    with st.form("search"):
        text = st.text_input("Find studies showing", key="q", bind=URL,
                             placeholder="right lower lobe consolidation")
        left, right = st.columns(2)
        # The options themselves (no format_func): the URL holds them (?target=reports).
        target = left.radio("Search", ["images", "reports"], horizontal=True, key="target",
                            bind=URL, captions=["text to image", "report sentences"])
        k = right.number_input("Studies", min_value=1, max_value=100, value=12, key="k", bind=URL)
        filters = filters_form()
        st.form_submit_button("Search")
    if not text.strip() or filters is None:
        return
    results = attempt(lambda: _search(text.strip(), int(k), target, filters, catalog_stamp()))
    if results is not None:
        _grid(results.hits, "score", key="search")


def _grid(hits: list, score_label: str, *, key: str) -> None:
    if not hits:
        st.info("No study matches.")
        return
    results_grid(hits, score_label, lambda hit: hit.score, key=key)


# -- similar cases ----------------------------------------------------------------------------


def in_temporary_folder(name: str, data: bytes, call: Any) -> Any:
    """``call(path)`` on an upload written to a temporary folder, removed afterwards (it is a
    patient's image); a one-line error names the upload, not the server's folder."""
    with tempfile.TemporaryDirectory(prefix="radsearch-ui-") as folder:
        path = Path(folder) / (Path(name).name or "upload")
        path.write_bytes(data)
        return attempt(lambda: call(path), hide={str(path): Path(name).name, folder: "upload"})


@st.cache_data(max_entries=64, ttl=ANSWER_TTL, show_spinner="Finding similar cases ...")
def _similar(query: str, k: int, filters: Filters, stamp: float) -> Any:
    del stamp
    return radsearch.similar(query, k=k, filters=filters, **settings())


@st.cache_data(max_entries=16, ttl=ANSWER_TTL, show_spinner="Finding similar cases ...")
def _similar_upload(name: str, data: bytes, k: int, filters: Filters, stamp: float) -> Any:
    del stamp
    return in_temporary_folder(name, data, lambda path: (
        image_preview(path), radsearch.similar(path, k=k, filters=filters, **settings())))


def _query_picture(ref: str) -> Any:
    """A picture of an indexed query: the file, else the first image of the study it names."""
    if Path(ref).is_file():
        return image_preview(ref)
    detail = radsearch.show(ref, **settings())
    images = [image for series in detail.series for image in series.images]
    return image_preview(*split_image_ref(images[0]), index=settings()["index"]) if images \
        else None


def similar_page() -> None:
    st.title("Similar cases")
    with st.form("similar"):
        upload = st.file_uploader("An image file (DICOM, PNG, JPEG)")
        ref = st.text_input("or an indexed study, series or image (UID, key or file)", key="ref",
                            bind=URL).strip()
        k = st.number_input("Studies", min_value=1, max_value=100, value=12, key="k", bind=URL)
        filters = filters_form()
        st.form_submit_button("Find similar cases")
    if filters is None or (upload is None and not ref):
        return
    picture, results = None, None
    if upload is not None:
        answer = _similar_upload(upload.name, upload.getvalue(), int(k), filters, catalog_stamp())
        if answer is not None:
            picture, results = answer
    else:
        results = attempt(lambda: _similar(ref, int(k), filters, catalog_stamp()))
        if results is not None:
            picture = attempt(lambda: _query_picture(ref))
    if results is None:
        return
    query_column, results_column = st.columns([1, 4])
    with query_column:
        st.markdown("**Query**")
        if picture is not None:
            st.image(picture, caption=upload.name if upload is not None else None,
                     use_container_width=True)
    with results_column:
        _grid(results.hits, "score", key="similar")


# -- studies with a finding -------------------------------------------------------------------


def label_choice(key: str) -> tuple[str | None, str | None]:
    """(labels, label_set) from the page: typed labels win over a built-in set."""
    labels = st.text_input("Labels, comma-separated", key=f"{key}_labels", bind=URL,
                           placeholder="pneumonia, pleural effusion, normal").strip()
    # The names themselves (no format_func): the URL holds the name (?label_set=modality).
    label_set = st.selectbox("or a built-in label set", ["", *LABEL_SETS], key=f"{key}_set",
                             bind=URL, help="; ".join(SET_NOTES.values()))
    if labels and label_set:
        st.caption(f"The typed labels are used; the {label_set} set is not.")
        return labels, None
    return labels or None, label_set or None


def _chexpert_note(label_set: str | None, label: str, modality: str | None) -> None:
    finding = any(label.strip().casefold() == name.casefold() for name in LABEL_SETS["chexpert"].labels)
    if label_set == "chexpert" or (label_set is None and finding):
        if modality and modality.upper() not in CHEST_RADIOGRAPHS:
            st.warning(CHEXPERT_NOTE)
        else:
            st.caption(CHEXPERT_NOTE)


@st.cache_data(max_entries=64, ttl=ANSWER_TTL, show_spinner="Finding studies ...")
def _label_query(label: str, min_prob: float, labels: str | None, label_set: str | None,
                 filters: Filters, limit: int | None, stamp: float) -> Any:
    del stamp
    return radsearch.label_query(label, min_prob=min_prob, labels=labels, label_set=label_set,
                                 filters=filters, limit=limit, **settings())


def label_page() -> None:
    st.title("Studies with a finding")
    with st.form("label"):
        label = st.text_input("Label", key="label", bind=URL, placeholder="pleural effusion").strip()
        min_prob = st.slider("Least probability", 0.05, 0.95, 0.5, 0.05, key="min_prob", bind=URL)
        labels, label_set = label_choice("label")
        at_most, per_page = st.columns(2)
        limit = at_most.number_input("At most (0: every match)", min_value=0, value=100, step=50,
                                     key="limit", bind=URL)
        page_size = per_page.number_input("Studies per page", min_value=1, max_value=100,
                                          value=PAGE_SIZE, key="per_page", bind=URL)
        filters = filters_form()
        st.form_submit_button("Find studies")
    if not label or filters is None:
        return
    _chexpert_note(label_set, label, filters.modality)
    cap = int(limit) or None
    # One more than asked: whether the list was cut is then known without counting every match.
    results = attempt(lambda: _label_query(label, float(min_prob), labels, label_set, filters,
                                           None if cap is None else cap + 1, catalog_stamp()))
    if results is None:
        return
    hits = results.hits
    condition = f"p({results.label}) ≥ {results.min_prob:.2f}"
    source = f"{results.label_set}, {results.kind}, {results.model}"
    if cap is not None and len(hits) > cap:
        hits = hits[:cap]
        st.warning(f"More than {cap} studies have {condition}: the {cap} most probable are listed. "
                   "Raise “At most” (0: every match) to list more.")
        st.text(f"the {cap} most probable studies with {condition} ({source})")
    else:
        st.text(f"{len(hits)} {'study' if len(hits) == 1 else 'studies'} with {condition} ({source})")
    if not hits:
        return
    size = int(page_size)
    pages = (len(hits) + size - 1) // size
    page = st.pagination(pages, key="page", bind=URL) if pages > 1 else 1
    first = (page - 1) * size
    results_grid(hits[first:first + size], "p", lambda hit: hit.probability, key="label",
                 numbered_from=first + 1)


# -- zero-shot classification -----------------------------------------------------------------


@st.cache_data(max_entries=64, ttl=ANSWER_TTL, show_spinner="Classifying ...")
def _classify(ref: str, labels: str | None, label_set: str | None, findings: bool,
              stamp: float) -> Any:
    del stamp
    result = radsearch.classify(ref, labels=labels, label_set=label_set, findings=findings,
                                **settings())
    return result, _query_picture(ref)


@st.cache_data(max_entries=16, ttl=ANSWER_TTL, show_spinner="Classifying ...")
def _classify_upload(name: str, data: bytes, labels: str | None, label_set: str | None,
                     findings: bool, stamp: float) -> Any:
    del stamp
    # A file is embedded with the index's model, as `radsearch classify FILE --index` does.
    return in_temporary_folder(name, data, lambda path: (
        radsearch.classify(path, labels=labels, label_set=label_set, findings=findings,
                           **settings()), image_preview(path)))


def classify_page() -> None:
    st.title("Zero-shot classification")
    with st.form("classify"):
        upload = st.file_uploader("An image file (DICOM, PNG, JPEG)")
        ref = st.text_input("or an indexed study (UID, key or file)", key="ref", bind=URL).strip()
        labels, label_set = label_choice("classify")
        findings = st.checkbox("Score each label on its own (label vs no label)", key="findings",
                               bind=URL)
        st.form_submit_button("Classify")
    if upload is None and not ref:
        return
    if labels is None and label_set is None:
        label_set = "chexpert"
    if label_set == "chexpert":
        st.caption(CHEXPERT_NOTE)
    if upload is not None:
        answer = _classify_upload(upload.name, upload.getvalue(), labels, label_set, findings,
                                  catalog_stamp())
    else:
        answer = attempt(lambda: _classify(ref, labels, label_set, findings, catalog_stamp()))
    if answer is None:
        return
    result, picture = answer
    kind = "independent probabilities" if result.kind == "findings" else "probabilities sum to 1"
    st.text(f"{result.label_set} ({kind}), {result.model}: most probable {result.top}")
    picture_column, chart_column = st.columns([1, 2])
    with picture_column:
        if picture is not None:
            st.image(picture, caption=upload.name if upload is not None else None,
                     use_container_width=True)
    with chart_column:
        rows = [{"label": s.label, "probability": round(s.probability, 3)} for s in result.scores]
        st.bar_chart(rows, x="label", y="probability", horizontal=True, sort="-probability")
        st.dataframe(
            [{"label": s.label, "probability": round(s.probability, 3),
              "cosine": round(s.similarity, 3)} for s in result.scores],
            hide_index=True, use_container_width=True,
        )


# -- the index --------------------------------------------------------------------------------


def index_page() -> None:
    st.title("Index")
    data = attempt(lambda: radsearch.stats(**settings()))
    if data is None:
        return
    counts = ("studies", "series", "images", "reports", "sentences", "failed", "skipped")
    for column, key in zip(st.columns(len(counts)), counts):
        # None: a count only the catalog keeps, of a store searched without it
        column.metric(key, "-" if data[key] is None else f"{data[key]:,}")
    st.text(f"model {data['model']['name']} ({data['model']['dim']}-d)   back end {data['backend']}"
            f"   index {data['index']}")
    chosen = settings()
    if chosen["backend"] or chosen["url"]:
        st.text(f"searches go to: {chosen['backend'] or 'qdrant'} {chosen['url'] or ''}")
    if not data["catalog"]:
        st.caption("No catalog of this index on this machine: what its store holds is shown.")
        by_modality, by_body_part = st.columns(2)
        for column, key, title in ((by_modality, "by_modality", "modality"),
                                   (by_body_part, "by_body_part", "body part")):
            column.markdown(f"**Studies by {title}**")
            column.table([{title: value or "(not recorded)", "studies": studies}
                          for value, studies in data[key].items()])
    overview = attempt(lambda: index_overview(Path(data["index"]))) if data["catalog"] else None
    if overview is not None:
        if overview["last_indexed"]:
            st.text(f"last file indexed {overview['last_indexed']}")
        by_modality, by_body_part = st.columns(2)
        by_modality.markdown("**Studies by modality**")
        by_modality.table(overview["by_modality"])
        by_body_part.markdown("**Studies by body part**")
        by_body_part.table(overview["by_body_part"])
    run = data["last_run"]
    if run is not None:
        with st.container(border=True, key="last-run"):
            st.markdown("**Last run**")
            st.text(last_run_summary(run))
            st.table(last_run_counts(run))
            if run["failures"]:
                st.markdown(f"Files it could not read ({len(run['failures'])})")
                st.dataframe(run["failures"], hide_index=True, use_container_width=True)
    if data["failures"] and (run is None or data["failures"] != run["failures"]):
        st.markdown(f"**Files that failed, all runs** ({len(data['failures'])})")
        st.dataframe(data["failures"], hide_index=True, use_container_width=True)
    st.json(data, expanded=False)


def empty_index_notice() -> None:
    """Said on every page: an index with no study answers nothing."""
    try:
        studies = _study_count(catalog_stamp())
    except radsearch.RadsearchError as error:
        st.warning(str(error))
        return
    if studies == 0:
        st.warning("This index holds no study yet: index a folder first (radsearch index DIR).")


@st.cache_data(max_entries=8, ttl=ANSWER_TTL, show_spinner=False)
def _study_count(stamp: float) -> int:
    del stamp
    return int(radsearch.stats(**settings())["studies"])
