"""`radsearch draft` and `radsearch drafters`: read options, call the library, print."""

from __future__ import annotations

from typing import Annotated

import typer

from radsearch.cli_options import BackendOpt, IndexOpt, JsonOpt, UrlOpt
from radsearch.drafting._registry import DEFAULT_DRAFTER
from radsearch.output import emit, out, say


def draft_command(
    query: Annotated[str, typer.Argument(help="An image file (DICOM/PNG/JPEG) or an indexed study's "
                                              "UID, key or file")],
    index: IndexOpt = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbour studies to draft from")] = 5,
    drafter: Annotated[str, typer.Option("--drafter", help="See `radsearch drafters`")] = DEFAULT_DRAFTER,
    same_patient: Annotated[bool, typer.Option(
        "--same-patient", help="Let other studies of the query's patient be neighbours")] = False,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Draft a report for a study from its nearest indexed studies' reports, every sentence cited."""
    from radsearch.drafting import draft

    emit(draft(query, index=index, k=k, drafter=drafter, same_patient=same_patient,
               backend=backend, url=url), json_output,
         _print_draft)


def _print_draft(result) -> None:
    out.print(f"Draft ({result.drafter}, {len(result.neighbours)} neighbours)", style="bold",
              highlight=False)
    section = None
    for sentence in result.sentences:
        if sentence.section != section and sentence.section != "REPORT":
            say(f"{sentence.section}:", style="bold")
        section = sentence.section
        marks = ",".join(str(c.neighbour) for c in sentence.citations) or "unsupported"
        say(f"  {sentence.text} [{marks}]")
    out.print("\nNeighbours:", style="bold", highlight=False)
    for number, neighbour in enumerate(result.neighbours, start=1):
        first = " ".join(neighbour.report.split())
        say(f"  [{number}] {neighbour.study}  score {neighbour.score:.3f}")
        say(f"      {first[:160]}{'...' if len(first) > 160 else ''}", style="dim")


def drafters_command(json_output: JsonOpt = False) -> None:
    """The report drafters `radsearch draft --drafter` accepts."""
    from radsearch.drafting import list_drafters

    def print_drafters(infos) -> None:
        for info in infos:
            say(f"{info.name}{' (default)' if info.default else ''}  {info.description}")

    emit(list_drafters(), json_output, print_drafters)
