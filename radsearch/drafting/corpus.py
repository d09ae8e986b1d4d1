"""The indexed reports as a whole (``ReportSource`` over an index's catalog)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from radsearch.drafting.base import DraftLine, ReportSource
from radsearch.drafting.text import normalise
from radsearch.storage.store import Store
from radsearch.drafting.neighbours import sentence_rows
from radsearch.storage.vectors import read_by_ids


class CatalogReports(ReportSource):
    """Reads the catalog of an open index once, when first asked."""

    def __init__(self, store: Store):
        self.store = store
        self._most_common: list[DraftLine] | None = None

    def most_common_report(self) -> list[DraftLine]:
        """The report written most often (after ``normalise``); when every report is written once,
        the one nearest the corpus's centroid (the mean of each report's mean sentence embedding),
        i.e. the report most like all the others."""
        if self._most_common is None:
            self._most_common = self._read_most_common()
        return self._most_common

    def _read_most_common(self) -> list[DraftLine]:
        with self.store.snapshot() as conn:
            reports = conn.execute("SELECT id, text FROM reports ORDER BY id").fetchall()
            counts = Counter(normalise(text) for _, text in reports)
            top, count = counts.most_common(1)[0]
            rows = sentence_rows(conn, "1", ())
            vectors = read_by_ids(conn, [row[4] for row in rows], self.store.dim)
        by_report: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_report.setdefault(row[2], []).append(i)
        if count > 1:
            chosen = next(rid for rid, text in reports if normalise(text) == top and rid in by_report)
        else:
            ids = list(by_report)
            means = np.stack([vectors[by_report[rid]].mean(axis=0) for rid in ids])
            means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
            centroid = means.mean(axis=0)
            chosen = ids[int(np.argmax(means @ centroid))]
        return [DraftLine(rows[i][1], rows[i][3], vectors[i]) for i in by_report[chosen]]
