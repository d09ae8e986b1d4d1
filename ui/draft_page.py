"""The draft page: a first report of a study or an upload (``radsearch.draft``), each sentence with
the neighbour sentences it cites, each citation a link to that study with the sentence marked."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

import streamlit as st

import radsearch
from radsearch.ui.common import ANSWER_TTL, HIGHLIGHT, attempt, catalog_stamp, settings
from radsearch.ui.pages import URL, in_temporary_folder


def citation_url(study: str, sentence: str) -> str:
    return f"study?{urlencode({'study': study, HIGHLIGHT: sentence})}"


@st.cache_data(max_entries=64, ttl=ANSWER_TTL, show_spinner="Drafting ...")
def _draft(ref: str, k: int, drafter: str, stamp: float) -> Any:
    del stamp
    return radsearch.draft(ref, k=k, drafter=drafter, **settings())


@st.cache_data(max_entries=16, ttl=ANSWER_TTL, show_spinner="Drafting ...")
def _draft_upload(name: str, data: bytes, k: int, drafter: str, stamp: float) -> Any:
    del stamp
    return in_temporary_folder(name, data, lambda path: radsearch.draft(
        path, k=k, drafter=drafter, **settings()))


def draft_page() -> None:
    st.title("Draft a report")
    drafters = {info.name: info for info in radsearch.list_drafters()}
    default = next((name for name, info in drafters.items() if info.default), None)
    with st.form("draft"):
        upload = st.file_uploader("An image file (DICOM, PNG, JPEG)")
        ref = st.text_input("or an indexed study (UID, key or file)", key="ref", bind=URL).strip()
        left, right = st.columns(2)
        k = left.number_input("Neighbour studies", min_value=1, max_value=50, value=5, key="k",
                              bind=URL)
        drafter = right.selectbox("Drafter", list(drafters), key="drafter", bind=URL,
                                  index=list(drafters).index(default) if default else 0,
                                  help="; ".join(f"{n}: {i.description}" for n, i in drafters.items()))
        st.form_submit_button("Draft")
    if upload is None and not ref:
        return
    if upload is not None:
        draft = _draft_upload(upload.name, upload.getvalue(), int(k), drafter, catalog_stamp())
    else:
        draft = attempt(lambda: _draft(ref, int(k), drafter, catalog_stamp()))
    if draft is None:
        return
    st.caption(f"drafter {draft.drafter}: a draft to check, from {len(draft.neighbours)} "
               "neighbour studies; each sentence lists the neighbour sentences that support it.")
    section = None
    for number, sentence in enumerate(draft.sentences, 1):
        if sentence.section != section:
            section = sentence.section
            st.text(section.upper())
        with st.container(border=True, key=f"draft-sentence-{number}"):
            st.text(sentence.text)
            if not sentence.citations:
                st.caption("no neighbour sentence supports it")
            for citation in sentence.citations:
                # A plain link (the page loads anew), so Back returns to the draft.
                link = html.escape(citation_url(citation.study, citation.sentence))
                st.markdown(f'<a class="citation" href="{link}" target="_self">'
                            f'[{citation.neighbour}]</a> {html.escape(citation.sentence)} '
                            f'<small>({citation.score:.2f})</small>', unsafe_allow_html=True)
