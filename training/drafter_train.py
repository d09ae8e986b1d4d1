"""Training the adapter drafter: token NLL, AdamW with warm-up and cosine decay, clipping, seeded,
checkpointed after every epoch and resumable, the kept epoch chosen by dev NLL (never test).

Optional text-only pretraining first: the decoder learns report language from report texts
without images or neighbours (the visual tokens are those of an all-zero grid, the grounding off).
Every epoch draws its shuffle and dropout from generators seeded by (seed, phase, epoch), so a run
that is stopped and resumed ends as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from radsearch.drafting.adapter_decoding import BeamSettings
from radsearch.drafting.adapter_inputs import neighbour_batch
from radsearch.drafting.adapter_model import AdapterConfig, AdapterDrafterNet, count_parameters, nll
from radsearch.drafting.adapter_towers import FrozenTowers
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.drafting.adapter_weights import RUN_FILE, save_weights
from radsearch.errors import RadsearchError
from radsearch.training.drafter_data import DrafterData, Example

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass(frozen=True)
class DrafterTrainConfig:
    epochs: int = 10
    pretrain_epochs: int = 0  # text-only epochs before the image epochs
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast on a CUDA device that has it, fp32 elsewhere


def _pad_states(parts: Sequence[torch.Tensor], steps: int) -> torch.Tensor:
    out = torch.zeros(len(parts), steps, parts[0].shape[-1])
    for i, part in enumerate(parts):
        out[i, :len(part)] = part.float()
    return out


def make_batch(examples: Sequence[Example], data: DrafterData | None, vocab: Vocab,
               config: AdapterConfig, device: str) -> dict:
    """Network inputs and targets for a batch of examples (text-only when they have no image)."""
    steps = max(len(e.tower_ids) - 1 for e in examples)
    depths = len(config.text_depths)
    text = [_pad_states([e.prefix_states[d] for e in examples], steps).to(device) for d in range(depths)]
    classes = torch.zeros(len(examples), steps, dtype=torch.long)
    targets = torch.zeros(len(examples), steps, dtype=torch.long)
    for i, e in enumerate(examples):
        ids = vocab.classes(e.tower_ids)
        classes[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        targets[i, :len(ids) - 1] = torch.tensor(ids[1:])
    cells = config.grid * config.grid
    if examples[0].grids:
        grids = [torch.stack([e.grids[s] for e in examples]).float().to(device)
                 for s in range(len(config.stage_channels))]
    else:
        grids = [torch.zeros(len(examples), cells, ch, device=device) for ch in config.stage_channels]
    if examples[0].neighbours and data is not None:
        nb = neighbour_batch([[data.corpus[j] for j in e.neighbours[:config.k]] for e in examples], vocab)
        neighbours = dict(neighbours=[s.to(device) for s in nb.states],
                          neighbour_padding=nb.padding.to(device), neighbour_classes=nb.classes.to(device),
                          neighbour_rank=nb.rank.to(device))
    else:
        empty = torch.zeros(len(examples), 0, dtype=torch.long, device=device)
        neighbours = dict(neighbours=None, neighbour_padding=empty.bool(), neighbour_classes=empty,
                          neighbour_rank=empty)
    return dict(grids=grids, **neighbours, text=text, classes=classes.to(device),
                padding=(classes == 0).to(device), targets=targets.to(device))


def batch_loss(net: AdapterDrafterNet, batch: dict) -> torch.Tensor:
    memory = net.memory(batch["grids"], batch["neighbours"], batch["neighbour_padding"],
                        batch["neighbour_classes"], batch["neighbour_rank"])
    log_probs = net(memory, batch["text"], batch["classes"], batch["padding"])
    return nll(log_probs.float(), batch["targets"])


def _autocast(device: str, precision: str):
    if precision == "fp32" or not device.startswith("cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision in ("auto", "bf16") and torch.cuda.is_bf16_supported() \
        else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def dev_loss(net: AdapterDrafterNet, examples: Sequence[Example], data: DrafterData, vocab: Vocab,
             batch_size: int, device: str, precision: str) -> float:
    """Token NLL over the dev reports (every token counted once)."""
    net.eval()
    total = tokens = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = make_batch(chunk, data, vocab, net.config, device)
        count = float((batch["targets"] != 0).sum())
        with _autocast(device, precision):
            total += float(batch_loss(net, batch)) * count
        tokens += count
    return total / max(tokens, 1.0)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_drafter(towers: FrozenTowers, data: DrafterData, vocab: Vocab, model: AdapterConfig,
                  config: DrafterTrainConfig, out: Path, pretrain: Sequence[Example] = (),
                  beam: BeamSettings = BeamSettings(), resume: bool = True,
                  log: Callable[[str], None] = lambda message: None) -> dict:
    """Train, keep the epoch with the best dev NLL as ``out/drafter.safetensors``; the history."""
    if not data.train:
        raise RadsearchError("no training rows: the manifests have no rows of split 'train'")
    if not data.dev:
        raise RadsearchError("no dev rows: the kept epoch is chosen on dev (split 'dev'), never on test")
    out.mkdir(parents=True, exist_ok=True)
    device = config.device
    torch.manual_seed(config.seed)
    net = AdapterDrafterNet(model).to(device)
    log(f"{count_parameters(net):,} trainable parameters; vocabulary {len(vocab)} tokens")
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "position" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr)
    phases = [("pretrain", list(pretrain), config.pretrain_epochs)] if pretrain else []
    phases.append(("train", data.train, config.epochs))
    per_epoch = {name: math.ceil(len(rows) / config.batch_size) for name, rows, _ in phases}
    total = sum(per_epoch[name] * epochs for name, _, epochs in phases)
    warmup = max(1, int(config.warmup_fraction * total))
    history: list[dict] = []
    best: dict = {"dev_loss": None, "epoch": None}
    step = 0
    done: set[tuple[str, int]] = set()
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["model"] != model.to_dict() or state["config"] != asdict(config):
            raise RadsearchError(f"{checkpoint}: from a run with other settings; use another --out "
                                 "or delete it to start again")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, step = state["history"], state["best"], state["step"]
        done = {tuple(d) for d in state["done"]}
        log(f"resuming after {len(done)} epochs (step {step}/{total})")
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda") and config.precision == "fp16")
    started, steps_at_start = time.monotonic(), step
    for phase, rows, epochs in phases:
        for epoch in range(1, epochs + 1):
            if (phase, epoch) in done:
                continue
            began = time.monotonic()
            order = list(range(len(rows)))
            random.Random(f"{config.seed}/{phase}/{epoch}").shuffle(order)
            torch.manual_seed(zlib.crc32(f"{config.seed}/{phase}/{epoch}".encode()))
            net.train()
            losses = []
            for b in range(per_epoch[phase]):
                chunk = [rows[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
                batch = make_batch(chunk, data if phase == "train" else None, vocab, model, device)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _schedule(step, total, warmup)
                with _autocast(device, config.precision):
                    loss = batch_loss(net, batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                step += 1
                if b % max(1, per_epoch[phase] // 5) == 0 or b == per_epoch[phase] - 1:
                    rate = (step - steps_at_start) / max(1e-9, time.monotonic() - started)
                    log(f"{phase} epoch {epoch}/{epochs} step {b + 1}/{per_epoch[phase]} loss "
                        f"{sum(losses[-20:]) / len(losses[-20:]):.3f}  {rate:.2f} steps/s  "
                        f"ETA {_eta((total - step) / max(rate, 1e-9))}")
            record = {"phase": phase, "epoch": epoch, "train_loss": sum(losses) / len(losses),
                      "seconds": round(time.monotonic() - began, 1)}
            if phase == "train":
                record["dev_loss"] = dev_loss(net, data.dev, data, vocab, 32, device, config.precision)
                if best["dev_loss"] is None or record["dev_loss"] < best["dev_loss"]:
                    best = {"dev_loss": record["dev_loss"], "epoch": epoch}
                    save_weights(out / RUN_FILE, net, vocab, beam, towers.encoder.name,
                                 towers.encoder.weights_hash())
            history.append(record)
            log(json.dumps(record))
            done.add((phase, epoch))
            torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                        "best": best, "step": step, "done": sorted(done), "model": model.to_dict(),
                        "config": asdict(config)}, checkpoint)
            (out / HISTORY).write_text(json.dumps({"history": history, "best": best}, indent=2))
    return {"history": history, "best": best, "weights": str(out / RUN_FILE)}


def model_config(towers: FrozenTowers, vocab: Vocab, **overrides) -> AdapterConfig:
    """The network's shape: the towers' sizes read from them, the rest from ``overrides``."""
    base = AdapterConfig(stage_channels=towers.shape.stage_channels, text_width=towers.shape.text_width,
                         text_depths=towers.shape.text_depths, grid=towers.grid, vocab_size=len(vocab))
    return replace(base, **overrides)
