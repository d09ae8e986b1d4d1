"""The study page: a series list, every slice of a series behind a slider, window presets and free
window/level applied to the original pixel values (Hounsfield units for CT), the header's technical
facts and the reports. The page's state (study, series, slice, window) is in the URL."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

import streamlit as st

import radsearch
from radsearch.previews import FrameValues, apply_window, image_preview, split_image_ref
from radsearch.reading.prepare import NAMED_CT_WINDOWS
from radsearch.ui.common import (
    ANSWER_TTL,
    HIGHLIGHT,
    attempt,
    catalog_stamp,
    decoded_frame,
    pacs_link,
    picture_stamp,
    settings,
)
from radsearch.ui.results import study_title

CT_PRESETS = ("lung", "mediastinum", "bone", "brain", "abdomen")  # W/L in HU: reading.prepare
FILE_WINDOW = "file"  # the file's own VOI window
FREE_WINDOW = "free"
VIEW_SIZE = 512  # pixels of a picture that is not a grayscale DICOM frame (PNG/JPEG, colour)


@st.cache_data(max_entries=256, ttl=ANSWER_TTL, show_spinner=False)
def _show(ref: str, modified: float) -> Any:
    del modified  # the catalog's time stamp: a re-indexed study is read anew
    return radsearch.show(ref, **settings())


@st.cache_data(max_entries=512, show_spinner=False)
def _picture(path: str, frame: int, modified: float) -> Any:
    del modified
    return image_preview(path, frame, size=VIEW_SIZE, index=settings()["index"])


def _series_label(series: Any) -> str:
    what = " ".join(v for v in (series.modality, series.body_part, series.view) if v) or "series"
    images = len(series.images)
    return f"{what} {series.description or ''} ({images} image{'s' if images != 1 else ''})"


def _step(delta: int, count: int) -> None:
    st.session_state["slice"] = min(max(int(st.session_state.get("slice", 1)) + delta, 1), count)


def _reset_slice() -> None:
    st.session_state["slice"] = 1


def study_page() -> None:
    st.title("Study")
    ref = st.text_input("Study key, UID, accession number or file", key="study",
                        bind="query-params").strip()
    if not ref:
        st.info("Open a study from a result, or give its key, one of its UIDs or a file.")
        return
    detail = attempt(lambda: _show(ref, catalog_stamp()))
    if detail is None:
        return
    modalities = sorted({s.modality for s in detail.series if s.modality})
    body_parts = sorted({s.body_part for s in detail.series if s.body_part})
    report = detail.reports[0].text if detail.reports else None
    st.subheader(study_title(detail.description, report, modalities, body_parts,
                             detail.study_date), anchor=False)
    st.text(f"date {detail.study_date or '-'}   {' '.join(modalities)}   "
            f"{len(detail.series)} series   study {detail.study}")
    links = " · ".join(
        f'<a class="study-action" href="{html.escape(path)}?{html.escape(urlencode({"ref": detail.study}))}" '
        f'target="_self">{name}</a>'
        for path, name in (("similar", "Similar cases"), ("classify", "Classify"),
                           ("draft", "Draft a report")))
    st.markdown(" · ".join(filter(None, [links, pacs_link(detail.link)])), unsafe_allow_html=True)
    for keyword, values in detail.identifiers.items():  # --keep-phi indexes only
        st.text(f"{keyword}: {' | '.join(values)}")
    if not detail.series:
        st.info("This study holds no images (a report only).")
    else:
        controls, view, facts_column = st.columns([1.1, 2, 1.3])
        with controls:
            # The numbers as options, the rest as captions: the URL holds the number (?series=2);
            # with a format_func it would hold the whole label, and ?series=2 would be ignored.
            numbers = [str(n) for n in range(1, len(detail.series) + 1)]
            chosen = st.radio("Series", numbers, captions=[_series_label(s) for s in detail.series],
                              key="series", bind="query-params", on_change=_reset_slice)
        series = detail.series[int(chosen or 1) - 1]
        facts = series_viewer(series, controls, view)
        with facts_column:
            st.table({"": list(facts), "value": list(facts.values())})
    marked = st.query_params.get(HIGHLIGHT)  # a sentence a draft cites
    for report in detail.reports:
        with st.container(border=True):
            st.markdown(f"**Report** ({report.source})")
            show_report(report.text, marked)


def show_report(text: str, marked: str | None) -> None:
    """The report as written; ``marked``, where it holds that sentence, highlighted."""
    before, found, after = text.partition(marked) if marked else (text, "", "")
    if not found:
        st.text(text)
        return
    st.markdown(f'<div style="white-space: pre-wrap">{html.escape(before)}'
                f'<mark class="cited">{html.escape(found)}</mark>{html.escape(after)}</div>',
                unsafe_allow_html=True)


def series_viewer(series: Any, controls: Any, view: Any) -> dict[str, str]:
    """The chosen slice of ``series`` in ``view``, in the window chosen in ``controls``; returns the
    facts to list beside it."""
    count = len(series.images)
    number = 1
    with view:
        if count > 1:
            if not 1 <= int(st.session_state.get("slice", 1)) <= count:
                st.session_state["slice"] = 1  # a link to a slice this series lacks
            back, slider, forward = st.columns([1, 8, 1], vertical_alignment="bottom")
            back.button("‹", key="slice-back", help="Previous slice", on_click=_step,
                        args=(-1, count), use_container_width=True)
            forward.button("›", key="slice-forward", help="Next slice", on_click=_step,
                           args=(1, count), use_container_width=True)
            number = slider.slider("Slice", 1, count, key="slice", bind="query-params")
    path, frame = split_image_ref(series.images[number - 1])
    facts = {"series": " ".join(v for v in (series.modality, series.body_part, series.view) if v),
             "description": series.description or "-", "manufacturer": series.manufacturer or "-",
             "slice": f"{number} of {count}"}
    try:
        values = decoded_frame(path, frame)
    except (OSError, radsearch.RadsearchError) as error:
        view.error(str(error) if isinstance(error, radsearch.RadsearchError)
                   else f"{path}: {error.strerror or error}")
        return facts
    if values is None:  # PNG/JPEG or colour: shown as it is
        with view:
            picture = attempt(lambda: _picture(path, frame, picture_stamp(path)))
            if picture is not None:
                st.image(picture, caption=f"slice {number} of {count}", use_container_width=True)
        return facts
    with controls:
        center, width = window_controls(values, (series.modality or "").upper() == "CT")
    position = "" if values.position is None else f"   position {values.position:.1f} mm"
    view.image(apply_window(values.values, center, width, invert=values.invert),
               caption=f"slice {number} of {count}{position}   W {width:g} L {center:g}",
               use_container_width=True)
    if values.position is not None:
        facts["slice position (mm)"] = f"{values.position:.2f}"
    return {**facts, **values.facts}


def window_controls(values: FrameValues, is_ct: bool) -> tuple[float, float]:
    """(level, width) chosen on the page: a CT preset (HU), the file's window, or free W/L."""
    choices = [FILE_WINDOW, *(CT_PRESETS if is_ct else ()), FREE_WINDOW]
    # The options themselves (no format_func): the URL holds the name (?window=lung).
    window = st.radio("Window", choices, key="window", bind="query-params", horizontal=True)
    if window in CT_PRESETS:
        preset = NAMED_CT_WINDOWS[window]
        st.caption(f"{window}: W {preset.width:g} L {preset.level:g} HU")
        return preset.level, preset.width
    if window == FREE_WINDOW:
        unit = " (HU)" if is_ct else ""
        left, right = st.columns(2)
        width = left.number_input(f"Width{unit}", min_value=1.0, value=round(values.width, 1),
                                  step=10.0, key="ww", bind="query-params")
        level = right.number_input(f"Level{unit}", value=round(values.center, 1), step=10.0,
                                   key="wl", bind="query-params")
        return float(level), float(width)
    st.caption(f"the file's window: W {values.width:g} L {values.center:g}")
    return values.center, values.width
