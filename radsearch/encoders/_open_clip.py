"""open_clip models: ``open_clip:ARCH@TAG``, ``open_clip:ARCH@/file``, ``open_clip:/dir``, ``hf-hub:``.

open_clip (PyPI ``open_clip_torch``) is imported only when such a model is built. Hub downloads
are tried only when nothing is cached and the hub is reachable: offline, a name that needs one
fails at once with one line, where the hub client would retry for about 25 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from radsearch.encoders._clip_base import TorchClipEncoder, square_size
from radsearch.encoders._hub import hub_endpoint, require_download
from radsearch.encoders._registry import ModelLoadError, ModelSpec
from radsearch.optional import feature, is_available

if TYPE_CHECKING:
    import torch

_CONFIG_FILE = "open_clip_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "spiece.model", "sentencepiece.bpe.model")


def import_open_clip(model: str) -> ModuleType:
    if not is_available("clip"):
        raise ModelLoadError(f"{model}: {feature('clip').message()}")
    import open_clip

    return open_clip


class OpenClipEncoder(TorchClipEncoder):
    def __init__(self, *, tokenizer: Any, **kwargs: Any) -> None:
        self._tokenizer = tokenizer
        super().__init__(**kwargs)

    def _embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self._tokenizer(texts).to(self.device))


def build_open_clip(spec: ModelSpec, device: str) -> OpenClipEncoder:
    """The encoder for an ``open_clip``, ``open_clip_dir`` or ``hf_hub`` spec."""
    open_clip = import_open_clip(spec.name)
    if spec.kind == "open_clip":
        model_name, create_kwargs, source = _architecture(open_clip, spec)
    elif spec.kind == "open_clip_dir":
        model_name, create_kwargs, source = _folder(spec)
    else:
        model_name, create_kwargs, source = _hub_repo(spec)
    try:
        model = open_clip.create_model(model_name, device=device, **create_kwargs)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as error:  # open_clip raises bare RuntimeError/ValueError/OSError alike
        message = " ".join(str(error).split())[:400]
        raise ModelLoadError(f"{spec.name}: open_clip could not load it: {message}") from error
    preprocess = open_clip.get_model_preprocess_cfg(model)
    try:
        image_size = square_size(preprocess["size"])
    except ValueError as error:
        raise ModelLoadError(f"{spec.name}: {error}") from None
    identity = {
        "format": "open_clip/v1",
        "source": source,
        "model_cfg": _model_config(open_clip, model_name),
        "preprocess": {
            "size": image_size, "mean": list(preprocess["mean"]), "std": list(preprocess["std"])
        },
        "tokenizer": type(tokenizer).__name__,
        "context_length": getattr(tokenizer, "context_length", None),
    }
    return OpenClipEncoder(
        name=spec.name,
        model=model,
        tokenizer=tokenizer,
        image_size=image_size,
        mean=preprocess["mean"],
        std=preprocess["std"],
        device=device,
        identity=identity,
        tokenizer_files=_tokenizer_files(spec),
    )


def _architecture(open_clip: ModuleType, spec: ModelSpec) -> tuple[str, dict, str]:
    arch, weights = spec.target.replace("/", "-"), spec.weights or ""
    if arch not in open_clip.list_models():
        raise ModelLoadError(
            f"{spec.name}: {arch!r} is not an open_clip architecture "
            f"(open_clip.list_models() names {len(open_clip.list_models())}, e.g. ViT-B-32, ViT-B-16)"
        )
    if os.path.isabs(weights):
        if not os.path.isfile(weights):
            raise ModelLoadError(f"{spec.name}: no weights file {weights}")
        return arch, {"pretrained": weights}, "file"
    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelLoadError(
            f"{spec.name}: {weights!r} is neither a pretrained tag of {arch} "
            f"({', '.join(tags) or 'none'}) nor a file"
        )
    cached = _cached_tag_file(tag_cfg)
    if cached is None:
        source, url = _tag_source(tag_cfg)
        require_download(
            spec.name, source,
            f"download it once where there is network (it is then cached), or give a local file: "
            f"open_clip:{arch}@/path/to/weights",
            url,
        )
        return arch, {"pretrained": weights}, f"tag:{weights}"
    # A cached file is passed as a path, so open_clip asks no hub; the tag's settings go with it.
    return arch, {
        "pretrained": cached,
        "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
        "force_preprocess_cfg": {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg},
    }, f"tag:{weights}"


def _tag_source(tag_cfg: dict) -> tuple[str, str]:
    """(what must be downloaded, from where) for a pretrained tag, as open_clip would choose."""
    if tag_cfg.get("hf_hub"):
        repo = os.path.split(tag_cfg["hf_hub"])[0]
        return f"{repo} from the Hugging Face Hub", hub_endpoint()
    return tag_cfg["url"], tag_cfg["url"]


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The local file of a pretrained tag, when an earlier download left one."""
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        for candidate in [*_get_safe_alternatives(filename), filename]:
            path = try_to_load_from_cache(repo, candidate)
            if isinstance(path, str):
                return path
        return None
    if tag_cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        return str(path) if path.is_file() else None
    return None


def _folder(spec: ModelSpec) -> tuple[str, dict, str]:
    folder = Path(spec.target)
    if not (folder / _CONFIG_FILE).is_file():
        raise ModelLoadError(f"{spec.name}: no {_CONFIG_FILE} in {folder} (open_clip's hub layout)")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise ModelLoadError(f"{spec.name}: no weights file ({', '.join(_WEIGHT_SUFFIXES)}) in {folder}")
    return f"local-dir:{folder}", {"require_pretrained": True}, "local-dir"


def _hub_repo(spec: ModelSpec) -> tuple[str, dict, str]:
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(spec.target, filename), str)

    weights = [*_get_safe_alternatives(HF_WEIGHTS_NAME), HF_WEIGHTS_NAME]
    if not (cached(_CONFIG_FILE) and any(cached(name) for name in weights)):
        require_download(
            spec.name, f"{spec.target} from the Hugging Face Hub",
            "download it once where there is network (it is then cached), or copy the repository "
            "to a folder and use open_clip:/path/to/folder",
        )
    return spec.name, {"require_pretrained": True}, spec.name


def _model_config(open_clip: ModuleType, model_name: str) -> Any:
    """The architecture's config, for the weights hash; hub configs are read from the cache only."""
    if model_name.startswith("hf-hub:"):
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(model_name.removeprefix("hf-hub:"), _CONFIG_FILE)
        if not isinstance(path, str):
            return None
        return json.loads(Path(path).read_text(encoding="utf-8")).get("model_cfg")
    return open_clip.get_model_config(model_name)


def _tokenizer_files(spec: ModelSpec) -> list[Path]:
    if spec.kind != "open_clip_dir":
        return []
    return [p for p in Path(spec.target).iterdir() if p.name in _TOKENIZER_FILES]

