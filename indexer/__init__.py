"""Indexing: discover -> read -> embed -> write; incremental, resumable. Imported as radsearch.indexer."""

from radsearch.indexer.pipeline import IndexSummary, Progress, default_workers, index_folder

__all__ = ["IndexSummary", "Progress", "default_workers", "index_folder"]
