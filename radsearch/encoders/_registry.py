"""Model names -> encoders: registered names, open_clip / Hugging Face models and checkpoint folders.

Every name ``create_model`` accepts is parsed by one function, :func:`parse_model_name`:

==============================================  ==================================================
``radclip-mini``, ``hashing-tiny``              a registered model (``register_model``)
``radclip-mini@/path/weights.safetensors``      a registered model that reads weights files, with
                                                one (``pretrained=`` folds into this form)
``open_clip:ARCH@TAG``                          open_clip architecture + pretrained tag, e.g.
                                                ``open_clip:ViT-B-32@laion2b_s34b_b79k``; the
                                                weights come from the Hugging Face Hub cache, or
                                                are downloaded once (never when offline)
``open_clip:ARCH@/path/weights.pt``             open_clip architecture + a local checkpoint file
                                                (``.pt``, ``.bin``, ``.pth``, ``.safetensors``);
                                                the same as ``open_clip:ARCH`` with
                                                ``pretrained="/path/weights.pt"``
``open_clip:/path/dir``                         a folder in open_clip's hub layout:
                                                ``open_clip_config.json`` + weights (+ tokenizer
                                                files when the text tower is a HF model)
``hf-hub:ORG/REPO``                             an open_clip model on the Hugging Face Hub, e.g.
                                                ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``
``hf-clip:/path/dir``                           a transformers ``CLIPModel`` folder: ``config.json``,
                                                ``model.safetensors`` or ``pytorch_model.bin``
                                                (or shards), tokenizer files
``hf-clip:/path/weights.bin?config=/path/config.json[&tokenizer=/path/dir]``
                                                a bare ``CLIPModel`` state dict + its config (as
                                                RadCLIP publishes); the tokenizer comes from
                                                ``tokenizer=``, else the config's folder
``checkpoint:/path/dir`` or ``/path/dir``       a radsearch checkpoint (``weights.safetensors``,
                                                ``config.json``, ``MODEL_CARD.md``)
==============================================  ==================================================

Paths may be relative or start with ``~``; the encoder's ``name`` is the canonical form (absolute
paths), which ``create_model`` accepts again, so an index can reload the model it was built with.
Everything after the first ``@`` of an ``open_clip:`` name is the tag or file (a file when it holds
a ``/``, starts with ``.`` or ``~``, ends in a weights suffix or exists); in ``hf-clip:`` names the
first ``?`` starts the options, so those paths must not contain ``?``. Bare paths name radsearch
checkpoints; registered names win over folders of the same name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radsearch.encoders.base import Encoder
from radsearch.errors import RadsearchError
from radsearch.optional import feature

DEFAULT_MODEL = "radclip-mini"
OPEN_CLIP_PREFIX = "open_clip:"
HF_HUB_PREFIX = "hf-hub:"
HF_CLIP_PREFIX = "hf-clip:"
CHECKPOINT_PREFIX = "checkpoint:"
# Weights files of open_clip:ARCH@... (a pretrained tag never ends so).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")

Factory = Callable[[str], Encoder]
WeightsFactory = Callable[[str, Path], Encoder]  # (device, weights file) -> encoder


class UnknownModelError(RadsearchError, ValueError):
    """No model of that name (a ValueError too, for callers that catch that)."""


class ModelLoadError(RadsearchError):
    """A model name was understood but the model cannot be built (missing file, package, network)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dim: int
    description: str
    default: bool


@dataclass(frozen=True)
class NameSyntax:
    """One form of model name beyond the registered ones, for ``radsearch models``."""

    pattern: str
    description: str
    example: str


NAME_SYNTAXES = (
    NameSyntax(
        "open_clip:ARCH@TAG",
        "open_clip architecture + pretrained tag: from the Hugging Face cache, else downloaded once",
        "open_clip:ViT-B-32@laion2b_s34b_b79k",
    ),
    NameSyntax(
        "open_clip:ARCH@/path/weights",
        "open_clip architecture + a local checkpoint file (.pt, .bin, .pth, .safetensors)",
        "open_clip:ViT-B-16@/models/vit-b-16.safetensors",
    ),
    NameSyntax(
        "open_clip:/path/dir",
        "a folder in open_clip's hub layout: open_clip_config.json + weights (+ tokenizer)",
        "open_clip:/models/BiomedCLIP",
    ),
    NameSyntax(
        "hf-hub:ORG/REPO",
        "an open_clip model on the Hugging Face Hub: from the cache, else downloaded once",
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    ),
    NameSyntax(
        "hf-clip:/path/dir",
        "a Hugging Face CLIPModel folder: config.json, weights, tokenizer files",
        "hf-clip:/models/clip-vit-base-patch32",
    ),
    NameSyntax(
        "hf-clip:/path/weights?config=/path/config.json[&tokenizer=/path/dir]",
        "a bare CLIPModel state dict + config (RadCLIP's); tokenizer: tokenizer= or config's folder",
        "hf-clip:/models/radclip.bin?config=/models/clip-vit-large-patch14/config.json",
    ),
    NameSyntax(
        "radclip-mini@/path/weights.safetensors",
        "radclip-mini with a weights file of its format (training's output; radsearch.encoders.weights)",
        "radclip-mini@./runs/a/radclip-mini.safetensors",
    ),
    NameSyntax(
        "checkpoint:/path/dir (or /path/dir)",
        "a radsearch checkpoint: weights.safetensors, config.json, MODEL_CARD.md",
        "checkpoint:./runs/radclip-lite2",
    ),
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name. ``name`` is canonical: ``parse_model_name(spec.name) == spec``."""

    kind: str  # "registered", "open_clip", "open_clip_dir", "hf_hub", "hf_clip" or "checkpoint"
    name: str
    target: str  # registered name, architecture, hub repo, or absolute folder / file path
    weights: str | None = None  # open_clip: the pretrained tag or absolute file path; registered:
    # the absolute weights file path, when given
    config: str | None = None  # hf_clip with a bare state dict: absolute config.json path
    tokenizer: str | None = None  # hf_clip: absolute tokenizer folder, when given

    def local_paths(self) -> list[Path]:
        """The local files and folders this model is read from."""
        if self.kind == "hf_hub":
            return []
        candidates = [self.weights, self.config, self.tokenizer]
        if self.kind != "open_clip":
            candidates.append(self.target)
        return [Path(p) for p in candidates if p and os.path.isabs(p)]


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    dim: int
    description: str
    weights_factory: WeightsFactory | None


_ENTRIES: dict[str, _Entry] = {}
# (canonical name, device) -> (fingerprint of the local files, encoder)
_INSTANCES: dict[tuple[str, str], tuple[tuple, Encoder]] = {}
_LOCK = threading.Lock()


def register_model(
    name: str,
    factory: Factory | None = None,
    *,
    dim: int,
    description: str,
    weights_factory: WeightsFactory | None = None,
) -> Callable[[Factory], Factory] | Factory:
    """Register ``factory(device) -> Encoder`` under ``name``; usable as a decorator.

    ``weights_factory(device, path)``: builds the model with the weights file ``path`` instead,
    for ``create_model(name, pretrained=path)``.
    """

    def add(factory: Factory) -> Factory:
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} is already registered")
        if any(c in name for c in ":/\\@"):
            raise ValueError(f"model name {name!r} must not contain ':', '/', '\\' or '@'")
        _ENTRIES[name] = _Entry(factory, dim, description, weights_factory)
        return factory

    return add if factory is None else add(factory)


def list_models() -> list[ModelInfo]:
    """The registered models; :func:`model_name_help` describes the other names."""
    return [
        ModelInfo(name, entry.dim, entry.description, name == DEFAULT_MODEL)
        for name, entry in sorted(_ENTRIES.items())
    ]


def model_name_help() -> str:
    """Lines for ``radsearch models``: the name forms beyond the registered models."""
    lines = ["Other model names (--model):"]
    for syntax in NAME_SYNTAXES:
        lines += [f"  {syntax.pattern}", f"      {syntax.description}", f"      e.g. {syntax.example}"]
    clip = feature("clip")
    if not clip.is_available():
        lines.append(clip.message())
    return "\n".join(lines)


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith((".", "~")) or os.path.isdir(name)


def _parse_open_clip(rest: str, pretrained: str | None) -> ModelSpec:
    if not rest:
        raise UnknownModelError(
            "open_clip: needs an architecture or a folder, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k"
        )
    if os.path.isdir(os.path.expanduser(rest)) or (_looks_like_path(rest) and "@" not in rest):
        if pretrained is not None:
            raise UnknownModelError(
                f"open_clip:{rest} is a folder holding its weights; pretrained= does not apply"
            )
        folder = _absolute(rest)
        return ModelSpec("open_clip_dir", OPEN_CLIP_PREFIX + folder, folder)
    arch, at, weights = rest.partition("@")
    if at and pretrained is not None:
        raise UnknownModelError(
            f"open_clip:{rest} names its weights after '@'; pretrained= does not apply"
        )
    weights = weights if at else pretrained
    if not weights:
        raise UnknownModelError(
            f"open_clip:{arch} needs weights: open_clip:{arch}@TAG (a pretrained tag) or "
            f"open_clip:{arch}@/path/to/weights (a checkpoint file)"
        )
    if _looks_like_path(weights) or weights.endswith(_WEIGHT_SUFFIXES) or os.path.isfile(weights):
        weights = _absolute(weights)
    return ModelSpec("open_clip", f"{OPEN_CLIP_PREFIX}{arch}@{weights}", arch, weights=weights)


def _parse_hf_clip(rest: str) -> ModelSpec:
    path, _, query = rest.partition("?")
    if not path:
        raise UnknownModelError("hf-clip: needs a folder or a weights file, e.g. hf-clip:/models/clip")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in ("config", "tokenizer") or not eq or not value or key in options:
            raise UnknownModelError(
                f"hf-clip option {item!r} not understood: use ?config=/path/config.json"
                "[&tokenizer=/path/dir]"
            )
        options[key] = _absolute(value)
    target = _absolute(path)
    name = HF_CLIP_PREFIX + target
    if options:
        name += "?" + "&".join(f"{k}={options[k]}" for k in ("config", "tokenizer") if k in options)
    return ModelSpec(
        "hf_clip", name, target, config=options.get("config"), tokenizer=options.get("tokenizer")
    )


def _parse_registered(name: str, weights: str | None, twice: bool) -> ModelSpec:
    if weights is None:
        return ModelSpec("registered", name, name)
    if not weights:
        raise UnknownModelError(f"{name}@ needs a weights file after '@', e.g. {name}@./weights.safetensors")
    readers = sorted(n for n, entry in _ENTRIES.items() if entry.weights_factory is not None)
    if _ENTRIES[name].weights_factory is None:
        raise UnknownModelError(
            f"{name} reads no weights file (weights files apply to open_clip:ARCH names and to "
            f"{', '.join(readers)})"
        )
    if twice:
        raise UnknownModelError(f"{name}@{weights} names its weights after '@'; pretrained= does not apply")
    path = _absolute(weights)
    return ModelSpec("registered", f"{name}@{path}", name, weights=path)


def parse_model_name(name: str, *, pretrained: str | None = None) -> ModelSpec:
    """Understand any model name (see the module docstring for the forms); raises UnknownModelError.

    ``pretrained`` (a tag or a checkpoint file) completes ``open_clip:ARCH`` names; a weights file
    completes the names of registered models that read them (radclip-mini).
    """
    name = name.strip()
    registered, at, weights = name.partition("@")
    if registered in _ENTRIES:
        return _parse_registered(registered, weights if at else pretrained, bool(at and pretrained))
    if pretrained is not None and not name.startswith(OPEN_CLIP_PREFIX):
        raise UnknownModelError(f"pretrained= applies to open_clip:ARCH names only, not {name!r}")
    if name.startswith(OPEN_CLIP_PREFIX):
        return _parse_open_clip(name.removeprefix(OPEN_CLIP_PREFIX), pretrained)
    if name.startswith(HF_HUB_PREFIX):
        repo = name.removeprefix(HF_HUB_PREFIX)
        parts = repo.split("/")
        if len(parts) != 2 or not all(parts):
            raise UnknownModelError(f"hf-hub: needs ORG/REPO, got {repo!r}")
        return ModelSpec("hf_hub", name, repo)
    if name.startswith(HF_CLIP_PREFIX):
        return _parse_hf_clip(name.removeprefix(HF_CLIP_PREFIX))
    if name.startswith(CHECKPOINT_PREFIX) or _looks_like_path(name):
        path = name.removeprefix(CHECKPOINT_PREFIX)
        if not path:
            raise UnknownModelError("checkpoint: needs a folder, e.g. checkpoint:./runs/my-model")
        folder = _absolute(path)
        return ModelSpec("checkpoint", CHECKPOINT_PREFIX + folder, folder)
    raise UnknownModelError(
        f"unknown model {name!r}; available: {', '.join(sorted(_ENTRIES))}; or a name like "
        "open_clip:ARCH@TAG, hf-hub:ORG/REPO, hf-clip:/DIR or checkpoint:/DIR (see `radsearch models`)"
    )


def _fingerprint(spec: ModelSpec) -> tuple:
    """Size and mtime of the local files behind ``spec``: a rewritten checkpoint is loaded anew."""
    stats = []
    for path in spec.local_paths():
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            try:
                stat = file.stat()
            except OSError:
                continue
            stats.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


def _build(spec: ModelSpec, device: str) -> Encoder:
    if spec.kind == "registered":
        entry = _ENTRIES[spec.target]
        if spec.weights is not None:
            if not os.path.isfile(spec.weights):
                raise ModelLoadError(f"{spec.name}: no such weights file")
            encoder = entry.weights_factory(device, Path(spec.weights))
        else:
            encoder = entry.factory(device)
        if encoder.dim != entry.dim:
            raise RuntimeError(f"model {spec.name!r} built with dim {encoder.dim}, registered {entry.dim}")
        return encoder
    if spec.kind in ("open_clip", "open_clip_dir", "hf_hub"):
        from radsearch.encoders._open_clip import build_open_clip

        return build_open_clip(spec, device)
    if spec.kind == "hf_clip":
        from radsearch.encoders._hf_clip import build_hf_clip

        return build_hf_clip(spec, device)
    from radsearch.encoders._checkpoint import load_checkpoint

    return load_checkpoint(spec.target, device=device)


def create_model(
    name: str = DEFAULT_MODEL, *, device: str = "cpu", pretrained: str | None = None
) -> Encoder:
    """The encoder ``name`` (any form :func:`parse_model_name` accepts) on ``device``.

    Built once per process and (canonical name, device), and reused; a model read from local files
    is built again when those files change. ``pretrained`` (a tag or a checkpoint file) completes an
    ``open_clip:ARCH`` name; for radclip-mini it is a weights file (``weights``).
    """
    spec = parse_model_name(name, pretrained=pretrained)
    key = (spec.name, device)
    # One lock for all builds: two threads asking at once must not load a model twice.
    with _LOCK:
        fingerprint = _fingerprint(spec)
        cached = _INSTANCES.get(key)
        if cached is None or cached[0] != fingerprint:
            encoder = _build(spec, device)
            if spec.kind != "registered" and encoder.name != spec.name:
                raise RuntimeError(f"model {spec.name!r} built as {encoder.name!r}")
            _INSTANCES[key] = (fingerprint, encoder)
        return _INSTANCES[key][1]
