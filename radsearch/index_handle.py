"""An open index: its store, its model (created and checked once, when first needed) and the
resolver of what a user names, with every question as a method.

    import radsearch

    with radsearch.open_index("my-index") as index:
        results = index.search("right lower lobe consolidation", k=5)
        index.similar(results.hits[0].study)
        index.show(results.hits[0].study)

The module-level functions (``radsearch.search``, ``similar``, ``show``, ...) open an index, ask
one question and close it. Each method works on every back end (faiss, qdrant-edge, a Qdrant
server or local store) where its data allows: on a store searched from a machine that did not
index it, the catalog's parts (reports' full text, identifiers, failures, drafting) are not there,
and asking for them is one clear error or, for ``show`` and ``stats``, what the store holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch import study_refs
from radsearch.encoders import Encoder, create_model
from radsearch.errors import RadsearchError
from radsearch.storage.backends import BackendSpec
from radsearch.storage.store import Store, default_index_path

if TYPE_CHECKING:  # each question's module is imported when first asked: opening stays light
    from radsearch.drafting import Draft
    from radsearch.drafting.compose import DraftSession
    from radsearch.filters import Filters
    from radsearch.label_search import LabelQueryResults
    from radsearch.retrieval import SearchResults
    from radsearch.studies import StudyDetail
    from radsearch.zeroshot import Classification


def resolve_index_path(index: str | Path | None) -> Path:
    """The index folder asked for, else the default (``$RADSEARCH_INDEX``, ``~/.radsearch/index``)."""
    return Path(index) if index is not None else default_index_path()


def backend_spec(backend: str | None, url: str | None,
                 options: dict | None = None) -> BackendSpec | None:
    """The back end named by ``--backend``/``--url`` (a URL alone means Qdrant), or None to use
    the one the index recorded."""
    if backend is None and url is None:
        if options:
            raise RadsearchError("back-end options need --backend")
        return None
    return BackendSpec(backend or "qdrant", url, dict(options or {}))


def checked_encoder(store: Store) -> Encoder:
    """The index's embedding model, refused when its weights are not those the index was built with."""
    encoder = create_model(store.model_name)
    store.check_model(encoder.describe())
    return encoder


@dataclass(frozen=True)
class QueryVector:
    """A query's embedding, with what may not answer it: its own studies and patient."""

    vector: np.ndarray
    # a study named: its key; a file: its own study's key (hashed UID) and those it is indexed under
    studies: frozenset[str]
    patient: str | None = None  # a file's patient, as a salted hash, if it names one


def open_index(path: str | Path | None = None, backend: str | None = None,
               url: str | None = None) -> Index:
    """Open the index at ``path`` (default: ``$RADSEARCH_INDEX`` or ``~/.radsearch/index``) to
    read it; ``backend``/``url`` name another store than its recorded one - with no index at
    ``path``, a Qdrant store searched from its own record."""
    location = resolve_index_path(path)
    return Index(Store.open_for_reading(location, backend_spec(backend, url)))


class Index:
    """An index open for reading; close it (or use ``with``) to release its store."""

    def __init__(self, store: Store):
        self.store = store
        self._encoder: Encoder | None = None
        self._drafting: DraftSession | None = None  # made on the first draft

    # -- what it is -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def has_catalog(self) -> bool:
        """Whether this machine holds the index's catalog (else only its store is searched)."""
        return self.store.conn is not None

    @property
    def encoder(self) -> Encoder:
        """The index's model, created and checked against the index on first use."""
        if self._encoder is None:
            self._encoder = checked_encoder(self.store)
        return self._encoder

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a user names ------------------------------------------------------------------
    def study_key(self, ref: str) -> str:
        """The key of the study that ``ref`` names: its key, a UID, or one of its indexed files."""
        return study_refs.study_key(self.store, str(ref))

    def study_vector(self, ref: str) -> tuple[np.ndarray, str]:
        """The stored embedding of the study ``ref`` names, and its key."""
        key = self.study_key(ref)
        return study_refs.stored_study_vector(self.store, key), key

    def embed(self, path: str | Path) -> QueryVector:
        """An image file's embedding (its frames pooled as a series's are, CT rendered as the
        index renders it), with the keys of its own study: the file need not be indexed."""
        from radsearch.query_embedding import embed_file

        vector, result = embed_file(Path(path), self.encoder, self.store.salt,
                                    ct_windows=self.store.ct_windows)
        own = {result.study_uid_hash} if result.study_uid_hash else set()
        if self.has_catalog:
            with self.store.snapshot() as conn:
                own |= study_refs.studies_of_file(conn, os.path.abspath(path))
        return QueryVector(vector, frozenset(own), result.patient_hash)

    def query_vector(self, query: str | Path) -> QueryVector:
        """A similar-cases or draft query: an existing file is embedded (:meth:`embed`); anything
        else names an indexed study, whose stored vector is used."""
        if Path(query).exists():
            return self.embed(query)
        vector, key = self.study_vector(str(query))
        return QueryVector(vector, frozenset({key}))

    # -- the questions ----------------------------------------------------------------------
    def search(self, text: str, *, k: int = 10, filters: Filters | None = None,
               target: str = "images") -> SearchResults:
        """Text query -> the k best studies, by their images (``images``) or report sentences
        (``reports``)."""
        from radsearch.retrieval import search_in

        return search_in(self, text, k=k, filters=filters, target=target)

    def similar(self, query: str | Path, *, k: int = 10,
                filters: Filters | None = None) -> SearchResults:
        """Cases similar to an image file (indexed or not) or to an indexed study, series or
        image; the query's own study is left out."""
        from radsearch.retrieval import similar_in

        return similar_in(self, query, k=k, filters=filters)

    def label_query(self, label: str, *, min_prob: float = 0.5,
                    labels: str | list[str] | None = None, label_set: str | None = None,
                    findings: bool | None = None, filters: Filters | None = None,
                    limit: int | None = None) -> LabelQueryResults:
        """The studies whose zero-shot probability of ``label`` is at least ``min_prob``, most
        probable first (see :func:`radsearch.label_search.label_query`)."""
        from radsearch.label_search import label_query_in

        return label_query_in(self, label, min_prob=min_prob, labels=labels,
                              label_set=label_set, findings=findings, filters=filters,
                              limit=limit)

    def classify(self, query: str | Path, *, labels: str | list[str] | None = None,
                 label_set: str | None = None, findings: bool = False) -> Classification:
        """Zero-shot classification of an indexed study (its stored vector) or of an image file
        that is not indexed (embedded with the index's model)."""
        from radsearch.zeroshot import classify_in

        return classify_in(self, query, labels=labels, label_set=label_set, findings=findings)

    def show(self, ref: str) -> StudyDetail:
        """One study in full: series, images, reports (and identifiers with --keep-phi); from the
        store alone, its card, series and images."""
        from radsearch.studies import show_in

        return show_in(self, str(ref))

    def stats(self) -> dict:
        """Counts, the model record and the last index run (see :func:`radsearch.studies.stats`)."""
        from radsearch.studies import stats_in

        return stats_in(self)

    def draft(self, query: str | Path, *, k: int = 5, drafter: str | None = None,
              same_patient: bool = False) -> Draft:
        """A first draft of the report of ``query`` from its ``k`` nearest studies' reports, every
        sentence cited, by ``drafter`` (default: the default drafter, see ``list_drafters``).
        Needs the catalog (the reports' sentences and their embeddings are read from it)."""
        from radsearch.drafting import DEFAULT_DRAFTER, create_drafter
        from radsearch.drafting.compose import DraftSession

        chosen = create_drafter(drafter or DEFAULT_DRAFTER)
        if not self.has_catalog:
            raise RadsearchError(
                f"{self.store.spec.describe()}: drafting reads the reports from the index's "
                "catalog: draft with the --index that built it")
        if self._drafting is None:
            self._drafting = DraftSession(self)
        return self._drafting.draft(query, k, chosen, same_patient)
