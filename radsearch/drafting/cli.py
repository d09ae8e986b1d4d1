"""`radsearch draft` and `radsearch drafters`: read options, call the library, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from radsearch.drafting._registry import DEFAULT_DRAFTER

out = Console(highlight=False)


def draft_command(
    query: Annotated[str, typer.Argument(help="An image file (DICOM/PNG/JPEG) or an indexed study's "
                                              "UID, key or file")],
    index: Annotated[Optional[Path], typer.Option(
        "--index", help="Index directory [default: $RADSEARCH_INDEX or ~/.radsearch/index]")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbour studies to draft from")] = 5,
    drafter: Annotated[str, typer.Option("--drafter", help="See `radsearch drafters`")] = DEFAULT_DRAFTER,
    same_patient: Annotated[bool, typer.Option(
        "--same-patient", help="Let other studies of the query's patient be neighbours")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Draft a report for a study from its nearest indexed studies' reports, every sentence cited."""
    from radsearch.drafting import draft

    result = draft(query, index=index, k=k, drafter=drafter, same_patient=same_patient)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return
    out.print(f"Draft ({result.drafter}, {len(result.neighbours)} neighbours)", style="bold")
    section = None
    for sentence in result.sentences:
        if sentence.section != section and sentence.section != "REPORT":
            out.print(f"{sentence.section}:", style="bold")
        section = sentence.section
        marks = ",".join(str(c.neighbour) for c in sentence.citations) or "unsupported"
        out.print(f"  {sentence.text} [{marks}]", markup=False)
    out.print("\nNeighbours:", style="bold")
    for number, neighbour in enumerate(result.neighbours, start=1):
        first = " ".join(neighbour.report.split())
        out.print(f"  [{number}] {neighbour.study}  score {neighbour.score:.3f}", markup=False)
        out.print(f"      {first[:160]}{'...' if len(first) > 160 else ''}", markup=False, style="dim")


def drafters_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The report drafters `radsearch draft --drafter` accepts."""
    from radsearch.drafting import list_drafters

    infos = list_drafters()
    if json_output:
        sys.stdout.write(json.dumps([info.__dict__ for info in infos], indent=2) + "\n")
        return
    for info in infos:
        out.print(f"{info.name}{' (default)' if info.default else ''}  {info.description}")
