"""`radsearch train drafter`: read options, call ``train_drafter_from_manifests``, print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.output import emit, log, say


def drafter(
    manifest: Annotated[list[Path], typer.Option(
        "--manifest", help="CSV of image-text pairs (image or image_path, text, split, group): its train "
        "rows are learnt, its dev rows choose the kept epoch; repeat for several")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, history, drafter.safetensors "
                                      "(draft with --drafter OUT)")],
    corpus: Annotated[Optional[list[Path]], typer.Option(
        "--corpus", help="Manifests whose train rows are the neighbours [default: the training rows]")] = None,
    pretrain_text: Annotated[Optional[list[Path]], typer.Option(
        "--pretrain-text", help="Report texts for text-only decoder pretraining: .txt (one a line) or "
        "an annotation .json (its train part)")] = None,
    model: Annotated[str, typer.Option("--model", help="Encoder whose frozen towers are adapted "
                                       "(the index's)")] = "radclip-mini",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 15,
    pretrain_epochs: Annotated[int, typer.Option("--pretrain-epochs", min=0)] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    lr: Annotated[float, typer.Option("--lr")] = 5e-4,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbour reports read per image")] = 5,
    d_model: Annotated[int, typer.Option("--d-model", help="Decoder width")] = 256,
    layers: Annotated[int, typer.Option("--layers", min=1, help="Decoder layers")] = 3,
    grounding: Annotated[bool, typer.Option("--grounding/--no-grounding",
                                            help="Read the neighbours' reports")] = True,
    cross_modal: Annotated[bool, typer.Option("--cross-modal/--no-cross-modal",
                                              help="Cross-attention between the adapters' streams")] = True,
    copy: Annotated[bool, typer.Option("--copy/--no-copy", help="Copy path over neighbour tokens")] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1")] = "cpu",
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 on CUDA), fp32, bf16, fp16")] = "auto",
    resume: Annotated[bool, typer.Option("--resume/--restart", help="Go on from OUT's checkpoint")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Train the adapter drafter: adapters on the frozen encoder towers and a decoder grounded on the
    neighbours' reports; the kept epoch is the best on dev."""
    from radsearch.training.drafter_run import train_drafter_from_manifests
    from radsearch.training.drafter_train import DrafterTrainConfig

    began = time.perf_counter()
    config = DrafterTrainConfig(epochs=epochs, pretrain_epochs=pretrain_epochs if pretrain_text else 0,
                                batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision)
    network = dict(k=k, d_model=d_model, layers=layers, ffn=2 * d_model, grounding=grounding,
                   cross_modal=cross_modal, copy=copy)
    result = train_drafter_from_manifests(
        manifest, out, corpus=corpus or (), model=model, pretrain_texts=pretrain_text or (),
        config=config, network=network, resume=resume, log=log)
    summary = {"best_epoch": result["best"]["epoch"], "best_dev_loss": result["best"]["dev_loss"],
               "weights": result["weights"], "train_rows": result["train_rows"],
               "dev_rows": result["dev_rows"], "corpus_rows": result["corpus_rows"],
               "pretrain_reports": result["pretrain_reports"],
               "seconds": round(time.perf_counter() - began, 1)}
    emit(summary, json_output, lambda summary: say(
        f"kept epoch {summary['best_epoch']} (dev NLL {summary['best_dev_loss']:.4f}); "
        f"draft with --drafter {out}"))
