"""The `radsearch` command: each command reads options, calls one library function and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from radsearch.cli_options import (
    BackendOpt,
    BodyPartOpt,
    DateFromOpt,
    DateToOpt,
    IndexOpt,
    JsonOpt,
    KOpt,
    ModalityOpt,
    ModelOpt,
    UrlOpt,
    ViewOpt,
)
from radsearch.errors import RadsearchError
from radsearch.lazy_commands import Entry, LazyGroup
from radsearch.output import emit, err, out
from radsearch.output import one_line as _one_line

# Every command, in the order `radsearch --help` lists them. Adding a command is one line here,
# "path": Entry("module:function", "summary"), and the function: its parameters are Typer options
# (Annotated), its docstring the help, it calls one library function and prints with
# radsearch.output.emit. Its module is imported only when the command runs or shows its help, so
# `radsearch --help` imports none of them (still: no torch at a command module's top level, for its
# own --help). A path with a space ("train clip") puts the command in a sub-group named in GROUPS.
COMMANDS: dict[str, Entry] = {
    "index": Entry("radsearch.cli:index", "Index a folder or a PACS: new and changed files are "
                   "embedded, unchanged files skipped."),
    "search": Entry("radsearch.cli:search", "Text search: the studies whose images (or report "
                    "sentences) best match TEXT; or, with --label, every study the zero-shot "
                    "classifier gives that label."),
    "similar": Entry("radsearch.cli:similar", "Similar cases: the studies whose images are closest "
                     "to a file or an indexed study."),
    "show": Entry("radsearch.cli:show", "Show one study: its series, images and reports."),
    "stats": Entry("radsearch.cli:stats", "Counts of what the index holds, and its model."),
    "check": Entry("radsearch.cli:check", "Verify the index: the catalog, its files and the back end "
                   "against the catalog."),
    "models": Entry("radsearch.cli:models", "The embedding models radsearch can use."),
    "doctor": Entry("radsearch.cli:doctor", "What is installed, what each missing extra would "
                    "enable, and the index."),
    "classify": Entry("radsearch.cli:classify", "Zero-shot classification of a study against any "
                      "labels."),
    "demo": Entry("radsearch.cli:demo", "Index the sample studies that ship with radsearch into an "
                  "index of their own and search it."),
    "remove": Entry("radsearch.cli:remove", "Remove studies, series or files from the index "
                    "(catalog, vectors and back end)."),
    "ui": Entry("radsearch.cli:ui", "The explorer in the browser: text search, similar cases, label "
                "queries, zero-shot classification, report drafts, a study viewer and statistics."),
    "draft": Entry("radsearch.drafting.cli:draft_command", "Draft a report for a study from its "
                   "nearest indexed studies' reports, every sentence cited."),
    "drafters": Entry("radsearch.drafting.cli:drafters_command", "The report drafters `radsearch "
                      "draft --drafter` accepts."),
    "train clip": Entry("radsearch.training.cli:clip", "Train radclip-mini contrastively on "
                        "manifests; the best dev epoch is kept and exported."),
    "train slice-pooling": Entry("radsearch.training.pooling_cli:slice_pooling", "Train "
                                 "radclip-mini's slice pooling on volume-report pairs; dev rows "
                                 "scored against the mean."),
    "train drafter": Entry("radsearch.training.drafter_cli:drafter", "Train the adapter report "
                           "drafter on manifests (neighbours from the corpus); the best dev epoch "
                           "is kept."),
    "eval retrieval": Entry("radsearch.training.cli:retrieval", "Image->text and text->image "
                            "Recall@1/5/10 and median rank on a manifest split."),
    "eval findings": Entry("radsearch.training.cli:findings", "Findings retrieval: each finding the "
                           "captions state (on enough images) as a text query; P@10 and AP."),
    "eval zeroshot": Entry("radsearch.training.zeroshot_cli:zeroshot", "Zero-shot accuracy, "
                           "balanced accuracy, macro AUC and confusion matrix on a manifest."),
    "eval report": Entry("radsearch.training.report_cli:report", "Draft every row of a split from a "
                         "corpus index; BLEU-1..4, METEOR, ROUGE-L, CIDEr, finding F1."),
}
GROUPS = {
    "train": "Train the encoders and the report drafter (`radsearch train clip`).",
    "eval": "Evaluate encoders (`radsearch eval retrieval`).",
}


class _Commands(LazyGroup):
    table = COMMANDS
    groups = GROUPS


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[default: ...]" in it is shown, not read as markup
)


@app.callback()
def _radsearch() -> None:
    """Index folders of radiology studies (DICOM, NIfTI, PNG/JPEG + reports) and search them,
    offline."""


def _filters(modality, body_part, view, date_from, date_to):
    from radsearch.filters import Filters

    return Filters(modality=modality, body_part=body_part, view=view, date_from=date_from,
                   date_to=date_to)


def index(
    path: Annotated[str, typer.Argument(help="Folder (or file) of studies to index, or a PACS: "
                                         "dicomweb+https://host/path or dimse://AET@host:port "
                                         "(see README)")],
    index: IndexOpt = None,
    reports: Annotated[
        Optional[Path], typer.Option("--reports", help="CSV of reports: a study key and its text")
    ] = None,
    group_by: Annotated[
        Optional[str],
        typer.Option("--group-by", help="Column of the --reports CSV whose value groups PNG/JPEG "
                     "images into studies (default: the first present of group, study_id, "
                     "accession, accession_number, case, case_id, patient, patient_id)"),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=0, help="Decoding processes (0: decode inline)")
    ] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove entries whose files are gone")] = False,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    backend_opt: Annotated[
        Optional[list[str]],
        typer.Option("--backend-opt", help="KEY=VALUE back-end option, repeatable (e.g. "
                     "shard_number=6, replication_factor=2, quantization=scalar, faiss_index=hnsw)"),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", help="i/n: index only shard i of n (n machines, one Qdrant cluster)"),
    ] = None,
    ct_windows: Annotated[
        Optional[str],
        typer.Option("--ct-windows", help="Render CT in three Hounsfield windows, one per model "
                     "channel: chest (lung, mediastinum, bone), head (brain, subdural, skull), three "
                     "names (e.g. lung,mediastinum,bone), or none (grayscale). Fixed when the index "
                     "is created; left out, the index's choice (a new index: none)"),
    ] = None,
    keep_phi: Annotated[
        bool,
        typer.Option("--keep-phi", help="Also store patient identifiers in clear (patient name, "
                     "ID, birth date and sex, accession number, study ID, Study/Series/SOP "
                     "Instance UIDs, study date and time, referring physician, institution, "
                     "descriptions as written) in the catalog only, never in the search back end; "
                     "`show` displays them and finds a study by accession number. Off by default: "
                     "UIDs and patient IDs are kept only as keyed hashes, the study date for the "
                     "date filters, and descriptions and report text lose the file's identifiers. "
                     "Recorded in the index: every later run must say it again"),
    ] = False,
    since: Annotated[
        Optional[str],
        typer.Option("--since", help="PACS only: studies dated on or after YYYY-MM-DD"),
    ] = None,
    modality: Annotated[
        Optional[str], typer.Option("--modality", help="PACS only: series of this modality (CT, MR...)")
    ] = None,
    study: Annotated[
        Optional[list[str]],
        typer.Option("--study", help="PACS only: this Study Instance UID (repeatable)"),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Index a folder or a PACS: new and changed files are embedded, unchanged files skipped."""
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.indexer.sources import index_source
    from radsearch.storage.backends import parse_options

    def run(on_progress):
        return index_source(
            path, reports=reports, group_by=group_by, shard=shard, since=since, modality=modality,
            studies=study or (), index=index, workers=workers, prune=prune,
            model=model or DEFAULT_MODEL, backend=backend, url=url,
            backend_options=parse_options(backend_opt or []), ct_windows=ct_windows,
            keep_phi=keep_phi, on_progress=on_progress)

    emit(_run_with_progress(run, quiet=json_output), json_output, _print_index_summary)


def _print_index_summary(summary) -> None:
    for label, entries in (("[red]failed[/red] ", summary.failures),
                           ("[yellow]skipped[/yellow]", summary.skips)):
        for file_path, reason in entries:
            err.print(f"{label} {_one_line(file_path)}: {_one_line(reason)}", highlight=False,
                      soft_wrap=True)
    for warning in summary.warnings:
        err.print(f"[yellow]warning[/yellow] {_one_line(warning)}", highlight=False, soft_wrap=True)
    for note in summary.notes:
        err.print(f"note {_one_line(note)}", highlight=False, soft_wrap=True)
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(summary.skipped_kinds.items()))
    others = sum(summary.skipped_kinds.values())
    gone = (f" + {others} neither images nor reports ({kinds})" if kinds else "") + (
        f", removed {summary.removed}" if summary.removed else "") + (
        f", missing {summary.missing} (use --prune)" if summary.missing else ""
    )
    out.print(
        f"indexed {summary.indexed}, unchanged {summary.unchanged}, failed {summary.failed}, "
        f"skipped {summary.skipped}{gone} - {summary.images} images, {summary.reports} reports "
        f"in {summary.seconds:.1f} s -> {summary.index} ({summary.backend})",
        highlight=False,
        soft_wrap=True,
    )
    if summary.stages:  # where the time went: one line, seconds per stage
        out.print(f"stages: {summary.stage_line()}", highlight=False, soft_wrap=True)


def _run_with_progress(job, *, quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class FilesPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} files/s" if task.speed else "- files/s")

    if quiet or not err.is_terminal:
        return job(None)
    with Progress(
        TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), FilesPerSecond(),
        TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
    ) as progress:
        task = progress.add_task("indexing", total=None)

        def update(event) -> None:
            progress.update(task, completed=event.done, total=event.total)

        return job(update)


def search(
    text: Annotated[
        Optional[str], typer.Argument(help="What to look for, e.g. 'left pleural effusion' "
                                      "(none with --label)")
    ] = None,
    index: IndexOpt = None,
    k: Annotated[
        Optional[int],
        typer.Option("-k", "--k", min=1, help="Number of studies to return (default: 10; with "
                     "--label: every match)"),
    ] = None,
    target: Annotated[
        str, typer.Option("--in", help="images: text-to-image; reports: report sentences")
    ] = "images",
    modality: ModalityOpt = None,
    body_part: BodyPartOpt = None,
    view: ViewOpt = None,
    date_from: DateFromOpt = None,
    date_to: DateToOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    label: Annotated[
        Optional[str],
        typer.Option("--label", help="Label query instead of TEXT: the studies the zero-shot "
                     "classifier assigns this label, e.g. 'pleural effusion'"),
    ] = None,
    min_prob: Annotated[
        float, typer.Option("--min-prob", help="With --label: the least probability, in (0, 1)")
    ] = 0.5,
    labels: Annotated[
        Optional[str],
        typer.Option("--labels", help='With --label: the competing labels, e.g. "CT, MRI, X-ray"'),
    ] = None,
    label_set: Annotated[
        Optional[str],
        typer.Option("--label-set", help="With --label: its built-in set (chexpert, modality, "
                     "body-region, plane) (default: the chexpert finding of that name, else the "
                     "label alone as a finding)"),
    ] = None,
    findings: Annotated[
        Optional[bool],
        typer.Option("--findings/--single", help="With --label: score it on its own (label vs 'no "
                     "label') / by a softmax over the set (default: the set's kind; --labels: "
                     "single)", show_default=False),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Text search: the studies whose images (or report sentences) best match TEXT; or, with
    --label, every study the zero-shot classifier gives that label with --min-prob or more."""
    filters = _filters(modality, body_part, view, date_from, date_to)
    if label is not None:
        from radsearch.label_search import label_query

        if text is not None:
            raise RadsearchError("give a query TEXT or --label, not both")
        if target != "images":
            raise RadsearchError("--label queries the studies' image vectors: drop --in")
        emit(label_query(label, min_prob=min_prob, labels=labels, label_set=label_set,
                         findings=findings, filters=filters, index=index, backend=backend,
                         url=url, limit=k),
             json_output, _print_label_results)
        return
    from radsearch.retrieval import search as run_search

    if text is None:
        raise RadsearchError("give a query TEXT (or --label)")
    if labels is not None or label_set is not None or findings is not None:
        raise RadsearchError("--labels, --label-set, --findings and --single go with --label")
    results = run_search(text, index=index, k=k or 10, target=target, backend=backend, url=url,
                         filters=filters)
    emit(results, json_output, _print_results)


def _print_label_results(results) -> None:
    from radsearch.study_refs import display_name, display_path

    kind = "finding" if results.kind == "findings" else "softmax over the set"
    out.print(f"{results.label} ({results.label_set}, {kind}) >= {results.min_prob:g} - "
              f"{len(results.hits)} studies", highlight=False)
    if not results.hits:
        _print_unmatched(results.unmatched_filters)
        return
    table = Table(show_lines=True)
    for column in ("#", "probability", "study", "date", "modality", "images"):
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(results.hits, start=1):
        table.add_row(
            str(rank), f"{hit.probability:.3f}", display_name(hit.study),
            hit.study_date or "", ", ".join(hit.modalities + hit.body_parts),
            "\n".join(display_path(image.path) + (f"#{image.frame}" if image.frame else "")
                      for image in hit.images),
        )
    out.print(table)
    out.print("(`radsearch show STUDY|FILE` for a study; --json for full keys and paths)",
              style="dim", highlight=False)


def similar(
    query: Annotated[str, typer.Argument(help="An image file (DICOM/NIfTI/PNG/JPEG) or an indexed UID")],
    index: IndexOpt = None,
    k: KOpt = 10,
    modality: ModalityOpt = None,
    body_part: BodyPartOpt = None,
    view: ViewOpt = None,
    date_from: DateFromOpt = None,
    date_to: DateToOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Similar cases: the studies whose images are closest to a file or an indexed study."""
    from radsearch.retrieval import similar as run_similar

    results = run_similar(query, index=index, k=k, backend=backend, url=url,
                          filters=_filters(modality, body_part, view, date_from, date_to))
    emit(results, json_output, _print_results)


def _print_results(results) -> None:
    from radsearch.study_refs import display_name

    if not results.hits:
        out.print("no matching studies")
        _print_unmatched(results.unmatched_filters)
        return
    # Four columns, so that the matches keep most of an 80-column terminal: the study cell holds
    # its label, date and modalities; an image is named once (not again when it is the study).
    table = Table(show_lines=True, expand=True)
    table.add_column("#")
    table.add_column("score")
    table.add_column("study", overflow="fold", ratio=2)
    table.add_column("matches", overflow="fold", ratio=3)
    for rank, hit in enumerate(results.hits, start=1):
        label = display_name(hit.study)
        if hit.study.startswith("file:") and "/" in label:  # the folder, then the file, each whole
            label = label.rsplit("/", 1)[0] + "/\n" + label.rsplit("/", 1)[1]
        study = "\n".join(filter(None, [label, hit.study_date,
                                        ", ".join(hit.modalities + hit.body_parts)]))
        lines = [escape(f"{s.section}: {s.text}") for s in hit.sentences]
        own = hit.study.partition(":")[2] if hit.study.startswith("file:") else None
        lines += _image_lines([image for image in hit.images if image.path != own])
        if hit.snippet:
            lines.append(f"[dim]{escape(hit.snippet)}[/dim]")
        table.add_row(str(rank), f"{hit.score:.3f}", escape(study), "\n".join(lines))
    out.print(table, highlight=False)
    for rank, hit in enumerate(results.hits, start=1):  # whole, unwrapped: a terminal opens them
        if hit.link:
            out.print(f"{rank}. {hit.link}", highlight=False, markup=False, soft_wrap=True)
    out.print("(`radsearch show STUDY|FILE` for a study; --json for full keys and paths)",
              style="dim", highlight=False)


def _image_lines(images) -> list[str]:
    """Matching images, their folder said once: 'folder/' then each file name, indented."""
    from radsearch.study_refs import display_path

    lines: list[str] = []
    folder = None
    for image in images:
        # Split as text: a PACS instance's key (dicomweb://host/...) is no file path
        parent, _, base = display_path(image.path).rpartition("/")
        name = base + (f"#{image.frame}" if image.frame else "")
        if (parent or ".") != folder:
            folder = parent or "."
            lines.append(escape(f"{folder}/"))
        lines.append(escape(f"  {name}"))
    return lines


def _print_unmatched(unmatched: dict[str, list[str]]) -> None:
    """Which values the index holds for each filter no study matched."""
    for name, held in unmatched.items():
        if name == "study_date":
            what = f"studies dated {held[0]} to {held[1]}" if held else "no study dates"
            out.print(f"--date-from/--date-to: the index holds {what}", highlight=False)
        else:
            option = "--" + name.replace("_", "-")
            values = ", ".join(held) if held else "none (no study records it)"
            out.print(f"no study has that {option}; the index holds: {values}", highlight=False,
                      markup=False, soft_wrap=True)


def show(
    ref: Annotated[str, typer.Argument(help="Study key, Study/Series/SOP Instance UID, or a file")],
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one study: its series, images and reports."""
    from radsearch.studies import show as run_show

    emit(run_show(ref, index=index, backend=backend, url=url), json_output, _print_study)


def _print_study(detail) -> None:
    # Text from the files (descriptions, reports, paths) is printed as is, never as markup.
    plain = {"highlight": False, "markup": False}
    out.print(f"study {detail.study}  date {detail.study_date or '-'}  {detail.description or ''}",
              **plain)
    _print_identifiers(detail.identifiers, "  ")
    if detail.link:
        out.print(f"  link {detail.link}", **plain)
    for series in detail.series:
        out.print(
            f"  series {series.series}  {series.modality or '-'} {series.body_part or ''} "
            f"{series.view or ''} {series.description or ''}  ({len(series.images)} images)",
            **plain,
        )
        _print_identifiers(series.identifiers, "    ")
        for image in series.images[:10]:
            out.print(f"    {image}", **plain)
        if len(series.images) > 10:
            out.print(f"    ... {len(series.images) - 10} more", **plain)
    for report in detail.reports:
        out.print(f"  report ({report.source}):", **plain)
        out.print("    " + report.text.replace("\n", "\n    "), **plain)


def _print_identifiers(identifiers: dict[str, list[str]], indent: str) -> None:
    """The identifiers an index built with --keep-phi holds (none otherwise)."""
    for keyword, values in identifiers.items():
        out.print(f"{indent}{keyword}: {' | '.join(values)}", highlight=False, markup=False,
                  soft_wrap=True)


def stats(index: IndexOpt = None, backend: BackendOpt = None, url: UrlOpt = None,
          json_output: JsonOpt = False) -> None:
    """Counts of what the index holds, and its model."""
    from radsearch.studies import stats as run_stats

    emit(run_stats(index=index, backend=backend, url=url), json_output, _print_stats)


def _print_stats(data: dict) -> None:
    for key in ("studies", "series", "images", "reports", "sentences", "failed", "skipped"):
        # None: a count only the catalog keeps, asked of a store without it.
        count = "- (kept in the index's catalog)" if data[key] is None else data[key]
        out.print(f"{key:10} {count}", highlight=False)
    for key, title in (("by_modality", "modality"), ("by_body_part", "body part")):
        counts = ", ".join(f"{value or '(none)'} {count}" for value, count in data[key].items())
        out.print(f"{title:10} {counts or '-'} (studies)", highlight=False, markup=False,
                  soft_wrap=True)
    out.print(f"model      {data['model']['name']} ({data['model']['dim']}-d)", highlight=False)
    windows = data["model"].get("ct_windows") or []
    out.print(f"CT windows {', '.join(w['name'] for w in windows) or 'none (grayscale)'}",
              highlight=False)
    out.print(f"index      {data['index']}", highlight=False)
    out.print(f"backend    {data['backend']}", highlight=False)
    _print_last_run(data["last_run"])


def _print_last_run(run: dict | None) -> None:
    """The newest index run of `radsearch stats`, and the files it could not read."""
    plain = {"highlight": False, "soft_wrap": True}  # text escaped by _one_line
    if run is None:
        out.print("last run   none recorded", **plain)
        return
    what = f"last run   {run['started']} of {_one_line(run['root'])}"
    if run["finished"] is None:
        out.print(f"{what}: did not finish (still running, or stopped); so far "
                  f"{run['indexed']} indexed, {run['failed']} failed", **plain)
    else:
        out.print(f"{what}, {run['seconds']:.1f} s: " + ", ".join(
            f"{run[name]} {name}" for name in ("indexed", "unchanged", "failed", "skipped",
                                               "removed")), **plain)
    for failure in run["failures"]:
        out.print(f"  failed   {_one_line(failure['path'])}: {_one_line(failure['reason'] or '')}",
                  **plain)


def check(
    index: IndexOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Set a damaged catalog aside (the next `index` "
                           "re-reads the files), rebuild a damaged or out-of-step back end from "
                           "the catalog, remove leftover temporary files")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Verify the index: the catalog, its files and the back end against the catalog."""
    from radsearch.health import check_error, check_index

    report = check_index(index, repair=repair)
    emit(report, json_output, _print_check)
    if check_error(report) is not None:
        raise typer.Exit(1)


def _print_check(report) -> None:
    for finding in report.findings:
        mark = "ok" if finding.ok else ("repaired" if finding.repaired else "PROBLEM")
        out.print(f"{mark:9}{finding.part:8}{_one_line(finding.message)}", highlight=False,
                  soft_wrap=True)


def models(json_output: JsonOpt = False) -> None:
    """The embedding models radsearch can use."""
    from radsearch.encoders import list_models, model_name_help

    def print_models(infos) -> None:
        for info in infos:
            mark = " (default)" if info.default else ""
            out.print(f"{info.name}{mark}  {info.dim}-d  {info.description}", highlight=False)
        out.print("\n" + model_name_help(), highlight=False, markup=False, soft_wrap=True)

    emit(list_models(), json_output, print_models)


def classify(
    query: Annotated[str, typer.Argument(help="An image file, or an indexed study's UID/key/file")],
    labels: Annotated[
        Optional[str], typer.Option("--labels", help='Comma-separated labels, e.g. "CT, MRI, X-ray"')
    ] = None,
    label_set: Annotated[
        Optional[str],
        typer.Option("--label-set", help="Built-in set: chexpert, modality, body-region, plane"),
    ] = None,
    findings: Annotated[
        bool, typer.Option("--findings", help="Score each label on its own (label vs 'no label')")
    ] = False,
    index: IndexOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model for a file (no index)")] = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Zero-shot classification of a study against any labels."""
    from radsearch.zeroshot import classify as run_classify

    emit(run_classify(query, labels=labels, label_set=label_set, findings=findings, index=index,
                      model=model, backend=backend, url=url),
         json_output, _print_classification)


def _print_classification(result) -> None:
    kind = "independent probabilities" if result.kind == "findings" else "probabilities sum to 1"
    # The title on a line of its own: as a table title it would wrap at the narrow table's width.
    out.print(f"{result.label_set} ({kind}) - {result.model}", highlight=False, markup=False)
    table = Table()
    for column in ("label", "probability", "cosine"):
        table.add_column(column)
    for score in result.scores:
        table.add_row(score.label, f"{score.probability:.3f}", f"{score.similarity:.3f}")
    out.print(table)


def demo(
    index: Annotated[
        Optional[Path],
        typer.Option("--index", help="Index directory for the sample studies [default: "
                     "~/.radsearch/demo, never your own index]"),
    ] = None,
    query: Annotated[str, typer.Option("--query", help="Text to search for")] = "pleural effusion",
    model: ModelOpt = None,
) -> None:
    """Index the sample studies that ship with radsearch into an index of their own and search it."""
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.indexer import index_folder
    from radsearch.retrieval import search as run_search
    from radsearch.samples import demo_index_path, sample_studies_path

    folder = sample_studies_path()
    index = index or demo_index_path()
    out.print(f"indexing the sample studies in {folder}\ninto the demo index {index} (your own "
              "index is not touched)", highlight=False)
    summary = _run_with_progress(
        lambda on_progress: index_folder(folder, index=index, model=model or DEFAULT_MODEL,
                                         on_progress=on_progress), quiet=False
    )
    out.print(f"indexed {summary.indexed}, unchanged {summary.unchanged}, failed {summary.failed} "
              f"-> {summary.index}", highlight=False)
    out.print(f'\nreport search: "{query}"', highlight=False)
    _print_results(run_search(query, index=Path(summary.index), k=3, target="reports"))
    out.print(f'\nimage search: "{query}"', highlight=False)
    _print_results(run_search(query, index=Path(summary.index), k=3))
    out.print(f"\nsearch it again with --index {index}, e.g. radsearch search \"head CT\" --index "
              f"{index}; remove it with rm -r {index}", highlight=False, soft_wrap=True)


def remove(
    refs: Annotated[list[str], typer.Argument(help="Indexed files or folders, or study, series or "
                                              "image UIDs/keys", show_default=False)],
    index: IndexOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; change nothing")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Remove studies, series or files from the index (catalog, vectors and back end)."""
    from radsearch.removal import remove as run_remove

    emit(run_remove(refs, index=index, dry_run=dry_run), json_output, _print_removal)


def _print_removal(summary) -> None:
    verb = "would remove" if summary.dry_run else "removed"
    for path in summary.files:
        out.print(f"{verb} {_one_line(path)}", highlight=False, soft_wrap=True)
    out.print(f"{verb} {len(summary.files)} files, {summary.images} images, {summary.reports} "
              f"reports, {summary.studies} whole studies -> {summary.index}", highlight=False)


def ui(
    index: IndexOpt = None,
    backend: BackendOpt = None,
    url: UrlOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (default: this machine only; give a "
                     "network address of this machine to let other machines in)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on")] = 8501,
) -> None:
    """The explorer in the browser: text search, similar cases, label queries, zero-shot
    classification, report drafts, a study viewer (slices, windows) and index statistics (needs
    the ui extra). Stopping this command stops its server."""
    from radsearch.ui import serve

    err.print(f"radsearch explorer on http://{host}:{port} (Ctrl+C stops it)", highlight=False)
    raise typer.Exit(serve(index=index, backend=backend, url=url, host=host, port=port))


def doctor(index: IndexOpt = None, json_output: JsonOpt = False) -> None:
    """What is installed (versions), what each missing extra would enable and how to install it,
    the index (default: $RADSEARCH_INDEX or ~/.radsearch/index) with its back end and model, and
    Java for METEOR."""
    from radsearch.doctor import diagnose

    emit(diagnose(index), json_output, _print_diagnosis)


def _print_diagnosis(diagnosis) -> None:
    plain = {"highlight": False, "markup": False, "soft_wrap": True}
    out.print(f"radsearch {diagnosis.radsearch}  Python {diagnosis.python}  {diagnosis.platform}",
              **plain)
    core = ", ".join(f"{name} {version or 'MISSING'}" for name, version in diagnosis.core.items())
    out.print(f"core       {core or '-'}", **plain)
    for status in diagnosis.features:
        if status.available:
            versions = ", ".join(f"{name} {version}" for name, version in status.packages.items())
            out.print(f"ok         {status.name:12} {f'[{status.extra}]':10} {versions}", **plain)
        else:
            out.print(f"missing    {status.name:12} {f'[{status.extra}]':10} {status.install}",
                      **plain)
            out.print(f"{'':35}would enable {status.enables}", **plain)
    index = diagnosis.index
    if not index.exists:
        what = "none yet (`radsearch index FOLDER` makes it)"
    elif index.error:
        what = f"unreadable: {index.error}"
    else:
        what = (f"{index.studies} studies, {index.backend} back end, model {index.model} "
                f"({index.dim}-d)")
    out.print(f"index      {index.path}: {what}", **plain)
    java = diagnosis.java or "not found: `radsearch eval report` leaves METEOR out"
    out.print(f"java       {java}", **plain)


def main() -> None:
    import faulthandler
    import signal
    import sqlite3
    import warnings

    from radsearch.errors import IndexOutOfStepWarning, StoreUnavailableWarning

    # A crash in native code (a signal such as SIGBUS) is at least named, never silent.
    try:
        faulthandler.enable()
    except (AttributeError, ValueError):  # stderr is not a file (captured, embedded): no report
        pass
    shown = warnings.showwarning

    def show_warning(message, category, *args, **kwargs) -> None:
        if issubclass(category, (IndexOutOfStepWarning, StoreUnavailableWarning)):
            err.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
        else:
            shown(message, category, *args, **kwargs)

    def interrupted(signum, frame) -> None:
        # One line, then KeyboardInterrupt unwinds (transactions roll back, workers stop) and
        # typer exits with status 130.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        err.print("interrupted: what was written is kept; run the same command again to finish",
                  highlight=False)
        raise KeyboardInterrupt

    warnings.showwarning = show_warning
    signal.signal(signal.SIGINT, interrupted)
    try:
        app()
    except RadsearchError as error:
        err.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        raise SystemExit(1) from None
    except sqlite3.DatabaseError as error:  # damage found mid-command, past the opening checks
        err.print(f"error: the index is damaged ({error}): `radsearch check` says where, "
                  "`radsearch check --repair` mends it", highlight=False, markup=False)
        raise SystemExit(1) from None
