"""The adapter drafter's weights file: only what is trained, never the frozen towers.

A safetensors file (read with ``safetensors.torch.load_file``, never pickle) holding the
``AdapterDrafterNet`` state, and in its metadata: the format, the network's ``AdapterConfig``, the
output vocabulary (the text tower's ids), the decoding settings and the encoder whose frozen towers
it was trained on (name and weights hash: other towers would give other features, so drafting with
them is refused). A trained run is a folder holding ``drafter.safetensors``; the built-in drafter is
``radsearch/model_weights/adapter-drafter.safetensors`` when it ships.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from radsearch.drafting.adapter_decoding import BeamSettings
from radsearch.drafting.adapter_model import AdapterConfig, AdapterDrafterNet
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.errors import RadsearchError

FORMAT = "radsearch-adapter-drafter/1"
RUN_FILE = "drafter.safetensors"


@dataclass(frozen=True)
class DrafterWeights:
    config: AdapterConfig
    vocab: Vocab
    beam: BeamSettings
    encoder: str
    encoder_hash: str
    state: dict[str, torch.Tensor]
    source: str

    def network(self, device: str = "cpu") -> AdapterDrafterNet:
        net = AdapterDrafterNet(self.config)
        net.load_state_dict({k: v.float() for k, v in self.state.items()})
        return net.to(device).eval()


def save_weights(path: Path, net: AdapterDrafterNet, vocab: Vocab, beam: BeamSettings, encoder: str,
                 encoder_hash: str, half: bool = False) -> Path:
    """Write the trained part; ``half``: float16 tensors (a shipped file, half the size)."""
    from safetensors.torch import save_file

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict()),
                "vocab": json.dumps(vocab.tower_ids), "beam": json.dumps(asdict(beam)),
                "encoder": encoder, "encoder_hash": encoder_hash}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def resolve_weights(ref: str | Path) -> Path:
    """A weights file, or a trained run's folder holding one."""
    path = Path(ref)
    if path.is_dir():
        path = path / RUN_FILE
    if not path.is_file():
        raise RadsearchError(f"{ref}: no adapter drafter weights here (a run folder with {RUN_FILE} "
                             "from `radsearch train drafter`, or such a file)")
    return path


def load_weights(ref: str | Path) -> DrafterWeights:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = resolve_weights(ref)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own types for damaged files
        raise RadsearchError(f"{path}: not a readable weights file ({error})") from None
    if meta.get("format") != FORMAT:
        raise RadsearchError(f"{path}: not an adapter drafter weights file (format "
                             f"{meta.get('format')!r}, expected {FORMAT!r})")
    return DrafterWeights(AdapterConfig.from_dict(json.loads(meta["config"])),
                          Vocab(json.loads(meta["vocab"])), BeamSettings(**json.loads(meta["beam"])),
                          meta["encoder"], meta["encoder_hash"], state, str(path))
