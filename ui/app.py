"""The radsearch explorer, a Streamlit app: each page is a thin layer over one public function.

Started by ``radsearch ui`` (``radsearch.ui.serve``), which passes the index, back end and URL after
``--``. Every page has its own path (``/search``, ``/study``, ...) and keeps its state in the URL's
query (``/study?study=KEY&slice=7``), so a case can be shared and Back works.
"""

from __future__ import annotations

import streamlit as st

from radsearch.ui.draft_page import draft_page
from radsearch.ui.pages import (
    classify_page,
    empty_index_notice,
    index_page,
    label_page,
    search_page,
    similar_page,
)
from radsearch.ui.viewer import study_page

st.set_page_config(page_title="radsearch", layout="wide")
PAGES = {
    "search": st.Page(search_page, title="Text search", url_path="search"),
    "similar": st.Page(similar_page, title="Similar cases", url_path="similar"),
    "label": st.Page(label_page, title="Studies with a finding", url_path="label"),
    "classify": st.Page(classify_page, title="Classify", url_path="classify"),
    "draft": st.Page(draft_page, title="Draft a report", url_path="draft"),
    "study": st.Page(study_page, title="Study", url_path="study"),
    "index": st.Page(index_page, title="Index", url_path="index"),
}
# "/" shows text search too; every page, text search included, also has its own path.
home = st.Page(lambda: search_page(), title="radsearch", url_path="", default=True)
navigation = st.navigation([home, *PAGES.values()], position="hidden")
# Plain links (each page loads anew from its address): Back then returns to the exact question.
# Streamlit's own page links drop or carry over the bound URL fields in the browser's history.
current = navigation.url_path or "search"
st.sidebar.markdown("**radsearch**")
st.sidebar.markdown("<br>".join(
    f'<a class="nav-link" href="{page.url_path}" target="_self">'
    f'{"<b>" + page.title + "</b>" if page.url_path == current else page.title}</a>'
    for page in PAGES.values()), unsafe_allow_html=True)
empty_index_notice()
navigation.run()
