"""Baseline drafters: the nearest neighbour's report, and the corpus's most common report."""

from __future__ import annotations

import numpy as np

from radsearch.drafting._registry import register_drafter
from radsearch.drafting.base import DraftLine, Drafter, Neighbour, ReportSource


class NearestCopy(Drafter):
    name = "nn-copy"

    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        return [DraftLine(s.section, s.text, s.vector) for s in neighbours[0].sentences]


class MostCommon(Drafter):
    name = "most-common"

    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        return source.most_common_report()


@register_drafter("nn-copy", description="baseline: the nearest neighbour's report, copied")
def _nn_copy() -> Drafter:
    return NearestCopy()


@register_drafter("most-common", description="baseline: the most common report of the indexed corpus, "
                  "whatever the query")
def _most_common() -> Drafter:
    return MostCommon()
