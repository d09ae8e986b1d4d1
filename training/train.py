"""The contrastive training loop: seeded, resumable, validated on dev after every epoch.

Every epoch draws its shuffle, augmentation and dropout from generators seeded by (seed, epoch), and
the checkpoint written after it holds the trainable weights, optimizer and schedule. So a run that
is stopped and resumed ends with the same weights as one that never stopped. The kept model is the
epoch with the best dev score (epoch 0 is the starting point): dev chooses, never test.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radsearch.errors import RadsearchError
from radsearch.training.data import PairData
from radsearch.training.metrics import bidirectional_metrics, mean_recall
from radsearch.training.model import ClipModel, contrastive_loss

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
HISTORY = "history.json"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingError(RadsearchError, ValueError):
    """Training cannot start or resume as asked."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # projections and temperature
    tower_lr: float = 2e-5  # tower weights that learn
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "auto"  # auto: fp16 autocast on CUDA, fp32 elsewhere
    device: str = "cpu"
    multi_positive: bool = False  # the pairs' positive groups are not each other's negatives


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float | None  # None for epoch 0, the model before training
    temperature: float
    dev: dict  # source name -> bidirectional metrics
    dev_score: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[EpochRecord]


def train(
    model: ClipModel,
    train_data: PairData,
    dev_data: Mapping[str, PairData],
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] = lambda record: None,
) -> TrainResult:
    """Train ``model`` in place; its weights end as those of the best dev epoch."""
    if config.precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {', '.join(PRECISIONS)}")
    _autocast_dtype(config)  # refuses fp16 without CUDA before any work
    if not dev_data or not any(len(d) for d in dev_data.values()):
        raise TrainingError("no dev rows: a split 'dev' is needed to choose the model")
    if len(train_data) < 2:
        raise TrainingError("need at least two training pairs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(config.device)
    steps_per_epoch = max(1, len(train_data) // config.batch_size)
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(config.epochs * steps_per_epoch, config.warmup_fraction)
    )
    history: list[EpochRecord] = []
    start = 1
    checkpoint_path = out_dir / CHECKPOINT
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=config.device, weights_only=True)
        if state["config"] != asdict(config):
            raise TrainingError(f"{checkpoint_path} was written with another configuration: "
                                f"{state['config']}")
        _load_trainable(model, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = [EpochRecord(**record) for record in state["history"]]
        start = state["epoch"] + 1
    else:
        if checkpoint_path.exists():
            raise TrainingError(f"{checkpoint_path} exists: pass resume, or choose an empty folder")
        record = _validate(model, dev_data, config, epoch=0, loss=None, seconds=0.0)
        history.append(record)
        _save({"trainable": _trainable(model), "epoch": 0, "dev_score": record.dev_score}, out_dir / BEST)
        _write_history(history, out_dir)
        on_epoch(record)

    for epoch in range(start, config.epochs + 1):
        began = time.perf_counter()
        loss = _train_epoch(model, train_data, optimizer, schedule, config, epoch, steps_per_epoch)
        record = _validate(model, dev_data, config, epoch=epoch, loss=loss,
                           seconds=time.perf_counter() - began)
        if record.dev_score > max(r.dev_score for r in history):
            _save({"trainable": _trainable(model), "epoch": epoch, "dev_score": record.dev_score},
                  out_dir / BEST)
        history.append(record)
        _save({"trainable": _trainable(model), "optimizer": optimizer.state_dict(),
               "schedule": schedule.state_dict(), "epoch": epoch, "config": asdict(config),
               "history": [asdict(r) for r in history]}, checkpoint_path)
        _write_history(history, out_dir)
        on_epoch(record)

    best = torch.load(out_dir / BEST, map_location=config.device, weights_only=True)
    _load_trainable(model, best["trainable"])
    return TrainResult(best["epoch"], best["dev_score"], history)


def embed_pairs(model: ClipModel, data: PairData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm image and text embeddings of every pair, images as read (no augmentation)."""
    model.eval()
    images, texts = [], []
    with torch.inference_mode(), _autocast(config):
        for start in range(0, len(data), config.batch_size):
            indices = np.arange(start, min(start + config.batch_size, len(data)))
            # .float(): under autocast the projections may answer in half precision.
            images.append(model.embed_images(data.image_inputs(indices, None, config.device)).float().cpu())
            texts.append(model.embed_texts(data.text_inputs(indices, config.device)[0]).float().cpu())
    return torch.cat(images).numpy(), torch.cat(texts).numpy()


def _train_epoch(model, data, optimizer, schedule, config, epoch, steps) -> float:
    model.train()
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout inside towers that learn
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    scaler = torch.amp.GradScaler("cuda") if _autocast_dtype(config) == torch.float16 else None
    losses = []
    for indices in _epoch_batches(data, min(config.batch_size, len(data)), steps, generator):
        with _autocast(config):
            images = model.embed_images(data.image_inputs(indices, generator, config.device))
            inputs, strings = data.text_inputs(indices, config.device, generator)
            texts = model.embed_texts(inputs)
            positives = (torch.from_numpy(data.positives(indices, strings))
                         if config.multi_positive else None)
            loss = contrastive_loss(images, texts, model.scale(), positives)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        learning = [p for p in model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(learning, config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _epoch_batches(
    data: PairData, batch: int, steps: int, generator: torch.Generator
) -> list[np.ndarray]:
    """A shuffled epoch in ``steps`` batches. With texts run live through a tower, each batch
    holds texts of similar length (sorted within pools of 8 batches), so that few padding tokens
    are computed: a random batch pads every caption to its longest clinical note."""
    order = torch.randperm(len(data), generator=generator).numpy()
    if data.text_features is None:
        pool = 8 * batch
        order = np.concatenate([
            chunk[np.argsort([len(data.texts[i]) for i in chunk], kind="stable")]
            for chunk in (order[start : start + pool] for start in range(0, len(order), pool))
        ])
    batches = [order[step * batch : (step + 1) * batch] for step in range(steps)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _validate(model, dev_data, config, *, epoch, loss, seconds) -> EpochRecord:
    dev = {}
    for name, data in dev_data.items():
        if len(data):
            dev[name] = bidirectional_metrics(*embed_pairs(model, data, config))
    # Weighted by rows, so that a large dev set counts for what it holds.
    score = sum(mean_recall(m) * m["n"] for m in dev.values()) / sum(m["n"] for m in dev.values())
    return EpochRecord(epoch, loss, float(1 / model.scale().detach()), dev, float(score), seconds)


def _optimizer(model: ClipModel, config: TrainConfig) -> torch.optim.Optimizer:
    head = {id(p) for p in [*model.projection_parameters(), model.logit_scale]}
    towers = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [
        {"params": model.projection_parameters(), "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": [model.logit_scale], "lr": config.lr, "weight_decay": 0.0},
    ]
    if towers:
        groups.append({"params": towers, "lr": config.tower_lr, "weight_decay": config.weight_decay})
    return torch.optim.AdamW(groups)


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _autocast_dtype(config: TrainConfig) -> torch.dtype | None:
    cuda = config.device.startswith("cuda")
    if config.precision == "bf16":
        return torch.bfloat16
    if config.precision == "fp16" or (config.precision == "auto" and cuda):
        if not cuda:
            raise TrainingError("fp16 mixed precision needs a CUDA device; use bf16 on CPU")
        return torch.float16
    return None


def _autocast(config: TrainConfig) -> contextlib.AbstractContextManager:
    dtype = _autocast_dtype(config)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=config.device.split(":")[0], dtype=dtype)


def _save(state: dict, path: Path) -> None:
    # Written aside then renamed: a run killed mid-write keeps its previous checkpoint whole.
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def _write_history(history: list[EpochRecord], out_dir: Path) -> None:
    (out_dir / HISTORY).write_text(json.dumps([asdict(r) for r in history], indent=2) + "\n")


def _trainable(model: ClipModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: ClipModel, tensors: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)
