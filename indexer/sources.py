"""One way in for what `radsearch index` is given: a folder (or file), or a PACS address.

Some options apply to one kind of source only: a reports CSV, its grouping column and a shard to
a folder; a date, a modality and study UIDs to a PACS. Given to the other kind they would be
silently ignored, so they are refused here, for the CLI and Python callers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radsearch.errors import RadsearchError
from radsearch.indexer.summary import IndexSummary


def index_source(
    source: str | Path,
    *,
    reports: Path | None = None,
    group_by: str | None = None,
    shard: str | None = None,
    since: str | None = None,
    modality: str | None = None,
    studies: Sequence[str] = (),
    **options: Any,
) -> IndexSummary:
    """Index ``source``: a PACS address (``dicomweb+https://host/path``, ``dimse://AET@host:port``)
    with ``indexer.pacs.index_pacs``, anything else as a folder or file with ``index_folder``.
    ``options`` are those both take (index, workers, prune, model, backend, url, backend_options,
    ct_windows, keep_phi, on_progress)."""
    from radsearch.indexer.pacs import index_pacs, is_pacs_address

    if is_pacs_address(str(source)):
        if reports is not None or group_by is not None or shard is not None:
            raise RadsearchError("--reports, --group-by and --shard are for folders, not a PACS")
        return index_pacs(str(source), since=since, modality=modality, studies=tuple(studies),
                          **options)
    if since is not None or modality is not None or studies:
        raise RadsearchError("--since, --modality and --study select studies of a PACS "
                             "(dicomweb+https://host/path, dimse://AET@host:port), not of a folder")
    from radsearch.indexer.pipeline import index_folder

    return index_folder(Path(source), reports=reports, group_by=group_by, shard=shard, **options)
