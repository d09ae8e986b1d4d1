"""Results as a grid of study cards: a thumbnail, a title that opens the study, the score and the
study's modality, date, description and a snippet of its report."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

import radsearch
from radsearch.errors import RadsearchError
from radsearch.ui.common import (
    ANSWER_TTL,
    catalog_stamp,
    pacs_link,
    settings,
    show_thumbnail,
    study_url,
)

CARDS_PER_ROW = 4
TITLE_WORDS = 6
SNIPPET_WORDS = 25
PAGE_SIZE = 20  # cards per page of a long list (label queries)
_HEADING = re.compile(r"^(EXAM(INATION)?|STUDY|PROCEDURE|TECHNIQUE)\s*:\s*", re.IGNORECASE)


def words(text: str, count: int) -> str:
    """The first ``count`` words of ``text``, with an ellipsis when it goes on."""
    parts = text.split()
    return " ".join(parts[:count]) + (" ..." if len(parts) > count else "")


def study_title(description: str | None, report: str | None, modalities: Sequence[str],
                body_parts: Sequence[str], study_date: str | None) -> str:
    """What a person calls the study: its description, else its report's first words, else what
    and when it is - never a file name, key or hash."""
    if description and description.strip():
        return words(description, TITLE_WORDS)
    if report and report.strip():
        return words(_HEADING.sub("", report.strip()), TITLE_WORDS)
    what = " ".join([*modalities, *body_parts]) or "Study"
    return f"{what}, {study_date}" if study_date else what


@st.cache_data(max_entries=4096, ttl=ANSWER_TTL, show_spinner=False)
def report_of(study: str, modified: float) -> str | None:
    """The study's first report, or None (none, or the index's catalog is not on this machine)."""
    del modified  # the catalog's time stamp: a re-indexed study is read anew
    try:
        detail = radsearch.show(study, **settings())
    except RadsearchError:
        return None
    return detail.reports[0].text if detail.reports else None


def _report(study: str) -> str | None:
    if not catalog_stamp():  # no catalog on this machine: a store's points hold no reports
        return None
    return report_of(study, catalog_stamp())


def results_grid(hits: Sequence[Any], score_label: str, score: Callable[[Any], float],
                 *, key: str, numbered_from: int = 1) -> None:
    """Cards of ``hits`` (search, similar or label-query hits), CARDS_PER_ROW to a row."""
    for start in range(0, len(hits), CARDS_PER_ROW):
        row = hits[start:start + CARDS_PER_ROW]
        for offset, (column, hit) in enumerate(zip(st.columns(CARDS_PER_ROW), row)):
            with column:
                study_card(numbered_from + start + offset, hit, score_label, score(hit), key)


def study_card(rank: int, hit: Any, score_label: str, score: float, key: str) -> None:
    report = _report(hit.study)
    title = study_title(hit.description, report, hit.modalities, hit.body_parts, hit.study_date)
    with st.container(border=True, key=f"{key}-card-{rank}"):
        if hit.images:
            image = hit.images[0]
            show_thumbnail(image.path, image.frame)
        # A plain link (the page loads anew): Back then returns to these results. Streamlit's own
        # page links keep the study's query on Back, and its image links open another tab.
        st.markdown(f'<a class="study-link" href="{html.escape(study_url(hit.study))}" '
                    f'target="_self">{rank}. {html.escape(title)}</a>', unsafe_allow_html=True)
        facts = [f"{score_label} {score:.3f}", " ".join(hit.modalities), " ".join(hit.body_parts),
                 hit.study_date or "no date"]
        st.text("  ·  ".join(fact for fact in facts if fact))
        if getattr(hit, "link", None):
            st.markdown(pacs_link(hit.link), unsafe_allow_html=True)
        if len(hit.images) > 1:
            st.caption(f"{len(hit.images)} matching images")
        if hit.description and len(hit.description.split()) > TITLE_WORDS:
            st.text(hit.description)  # the title holds its first words only
        for sentence in getattr(hit, "sentences", [])[:3]:
            st.text(f"[{sentence.section}] {sentence.text} ({sentence.score:.3f})")
        if report and not getattr(hit, "sentences", None):
            st.text(words(report, SNIPPET_WORDS))
