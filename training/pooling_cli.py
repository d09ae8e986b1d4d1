"""`radsearch train slice-pooling`: radclip-mini's series pooling, trained on volume-report pairs.

torch loads inside the command, so that its --help stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.cli_options import JsonOpt
from radsearch.encoders.slice_pooling import DEFAULT_MAX_SLICES
from radsearch.output import emit, log, say


def slice_pooling(
    manifest: Annotated[list[Path], typer.Option(
        "--manifest", help="CSV of volume-report pairs (image: a NIfTI file, a multi-frame DICOM file "
        "or a folder of one series' DICOM files; text; split; group); repeat for several")],
    out: Annotated[Path, typer.Option(
        "--out", help="The radclip-mini weights file to write: --weights with the trained pooling")],
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="radclip-mini weights file that embeds slices and reports [default: the "
        "shipped one]")] = None,
    ct_windows: Annotated[str, typer.Option(
        "--ct-windows", help="Render CT as the index will: chest, head, three window names, or "
        "none")] = "none",
    heads: Annotated[int, typer.Option("--heads", min=1, help="Attention heads (divide 512)")] = 8,
    layers: Annotated[int, typer.Option("--layers", min=0, help="Self-attention blocks")] = 1,
    max_slices: Annotated[int, typer.Option(
        "--max-slices", min=2, help="Longer series are sampled evenly down to this")] = DEFAULT_MAX_SLICES,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2)] = 32,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps")] = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Train radclip-mini's slice pooling on volume-report pairs; dev rows scored against the mean."""
    from radsearch.training.pooling import train_slice_pooling

    summary = train_slice_pooling(
        manifest, out, weights=weights, ct_windows=ct_windows, heads=heads, layers=layers,
        max_slices=max_slices, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        device=device, log=log)

    def print_summary(summary: dict) -> None:
        say(f"trained on {summary['train_volumes']} volumes, final loss {summary['losses'][-1]:.4f}; "
            f"weights: {summary['weights']}")
        if summary["dev"] is not None:
            for name in ("pooling", "mean"):
                m = summary["dev"][name]
                say(f"  dev {name:8s} volume->report R@1 {m['image_to_text']['R@1']:.3f}  "
                    f"R@5 {m['image_to_text']['R@5']:.3f}  report->volume R@1 "
                    f"{m['text_to_image']['R@1']:.3f}  ({m['n']} volumes)")

    emit(summary, json_output, print_summary)
