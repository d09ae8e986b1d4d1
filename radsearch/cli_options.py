"""Options that several commands share, written once so that their names and help read alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

IndexOpt = Annotated[
    Optional[Path],
    typer.Option("--index", help="Index directory [default: $RADSEARCH_INDEX or ~/.radsearch/index]"),
]
KOpt = Annotated[int, typer.Option("-k", "--k", min=1, help="Number of studies to return")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Embedding model (see `models`)")]
ModalityOpt = Annotated[Optional[str], typer.Option("--modality", help="e.g. CT, MR, CR, DX, XRAY")]
BodyPartOpt = Annotated[Optional[str], typer.Option("--body-part", help="e.g. CHEST, HEAD")]
ViewOpt = Annotated[Optional[str], typer.Option("--view", help="e.g. PA, AP, LATERAL, AXIAL")]
DateFromOpt = Annotated[Optional[str], typer.Option("--date-from", help="YYYY-MM-DD")]
DateToOpt = Annotated[Optional[str], typer.Option("--date-to", help="YYYY-MM-DD")]
BackendOpt = Annotated[
    Optional[str],
    typer.Option("--backend", help="faiss | qdrant-edge | qdrant [default: the index's recorded one, "
                 "else faiss]"),
]
UrlOpt = Annotated[
    Optional[str],
    typer.Option("--url", help="Qdrant server/cluster URL, http(s)://host:6333 (API key from "
                 "$RADSEARCH_QDRANT_API_KEY)"),
]
