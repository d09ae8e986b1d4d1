"""Indexing: discover -> read -> embed -> write -> aggregate; incremental, resumable. Imported as
radsearch.indexer.

``index_folder`` (indexer.pipeline) and ``indexer.pacs.index_pacs`` assemble the stages of
``indexer.stages`` (the plan of ``indexer.plan``) and hand them to ``indexer.runner``, which times
each stage (``IndexSummary.stages``).
"""

from radsearch.indexer.pipeline import index_folder
from radsearch.indexer.stages import default_workers
from radsearch.indexer.summary import IndexSummary, Progress

__all__ = ["IndexSummary", "Progress", "default_workers", "index_folder"]
