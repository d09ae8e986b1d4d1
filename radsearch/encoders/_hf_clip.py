"""Hugging Face ``CLIPModel`` checkpoints from local files: ``hf-clip:/dir``, ``hf-clip:/weights?config=``.

The folder form holds ``config.json``, the weights (``model.safetensors``, ``pytorch_model.bin``
or their sharded ``*.index.json`` form) and the tokenizer files. The bare form is a state dict (as
RadCLIP publishes its ViT-L/14: a ``CLIPModel`` state dict for the openai/clip-vit-large-patch14
config) plus that config; its tokenizer comes from ``tokenizer=``, else the config's folder.
Weights are read with safetensors or ``torch.load(weights_only=True)``, never by unpickling code.
Image statistics come from ``preprocessor_config.json`` beside the config when present, else
OpenAI CLIP's; the input size is the vision config's ``image_size``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radsearch.encoders._clip_base import CLIP_MEAN, CLIP_STD, TorchClipEncoder
from radsearch.encoders._registry import ModelLoadError, ModelSpec

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
                    "special_tokens_map.json", "added_tokens.json")
# Keys older transformers saved as buffers and current ones rebuild: safe to drop when unexpected.
_OBSOLETE_SUFFIXES = ("position_ids",)
_WRAPPER_KEYS = ("state_dict", "model")


class HfClipEncoder(TorchClipEncoder):
    def __init__(self, *, tokenizer: Any, max_length: int, **kwargs: Any) -> None:
        self._tokenizer = tokenizer
        self._max_length = max_length
        super().__init__(**kwargs)

    def _embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        ).to(self.device)
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return _pooled(output)


def _pooled(output: Any) -> torch.Tensor:
    """transformers < 5 returns the projected tensor, 5 an output whose pooler_output it is."""
    return output if hasattr(output, "shape") else output.pooler_output


def build_hf_clip(spec: ModelSpec, device: str) -> HfClipEncoder:
    target = Path(spec.target)
    if target.is_dir():
        if spec.config is not None:
            raise ModelLoadError(f"{spec.name}: config= is for a bare weights file, not a folder")
        config_path, weight_files = target / CONFIG_FILE, _folder_weights(spec, target)
    elif target.is_file():
        if spec.config is None:
            raise ModelLoadError(
                f"{spec.name}: a bare weights file needs its config: "
                f"hf-clip:{target}?config=/path/to/config.json"
            )
        config_path, weight_files = Path(spec.config), [target]
    else:
        raise ModelLoadError(f"{spec.name}: no such folder or file {target}")
    if not config_path.is_file():
        raise ModelLoadError(f"{spec.name}: no config {config_path}")
    tokenizer_dir = Path(spec.tokenizer) if spec.tokenizer else config_path.parent
    tokenizer_files = [tokenizer_dir / n for n in _TOKENIZER_FILES if (tokenizer_dir / n).is_file()]
    if not tokenizer_files:
        raise ModelLoadError(
            f"{spec.name}: no tokenizer files in {tokenizer_dir} (tokenizer.json, or vocab.json + "
            "merges.txt); copy them there or add &tokenizer=/path/to/tokenizer/folder"
        )
    model, config = _load_model(spec, config_path, weight_files)
    tokenizer = _load_tokenizer(spec, tokenizer_dir, config)
    mean, std = _image_statistics(spec, config_path.parent / PREPROCESSOR_FILE)
    image_size = int(config.vision_config.image_size)
    identity = {
        "format": "hf-clip/v1",
        "config": json.loads(config.to_json_string(use_diff=False)),
        "preprocess": {"size": image_size, "mean": list(mean), "std": list(std)},
    }
    # transformers' version and commit are recorded in the config; they do not change the outputs.
    for key in ("transformers_version", "_commit_hash", "_name_or_path"):
        identity["config"].pop(key, None)
    return HfClipEncoder(
        name=spec.name,
        model=model,
        tokenizer=tokenizer,
        max_length=int(config.text_config.max_position_embeddings),
        image_size=image_size,
        mean=mean,
        std=std,
        device=device,
        identity=identity,
        tokenizer_files=tokenizer_files,
    )


def _folder_weights(spec: ModelSpec, folder: Path) -> list[Path]:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            return [folder / shard for shard in shards]
    raise ModelLoadError(f"{spec.name}: no {' or '.join(_WEIGHT_FILES)} (or sharded index) in {folder}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a plain pickled state dict (no code is unpickled)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelLoadError(
            f"{path} is not a plain state dict (refusing to unpickle code): {str(error).splitlines()[0]}"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    return loaded


def _load_model(spec: ModelSpec, config_path: Path, weight_files: list[Path]) -> tuple[Any, Any]:
    from transformers import CLIPConfig, CLIPModel

    try:
        config = CLIPConfig.from_json_file(str(config_path))
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(f"{spec.name}: {config_path} is not a CLIP config: {error}") from None
    if config.model_type != "clip":
        raise ModelLoadError(f"{spec.name}: {config_path} has model_type {config.model_type!r}, not 'clip'")
    state: dict[str, torch.Tensor] = {}
    for path in weight_files:
        state.update(read_state_dict(path))
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k.removeprefix("module."): v for k, v in state.items()}
    model = CLIPModel(config)
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.endswith(_OBSOLETE_SUFFIXES)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected),
                                        ("wrong shape", wrong)) if keys]
        raise ModelLoadError(
            f"{spec.name}: the weights do not fit the CLIPModel of {config_path.name}: "
            + "; ".join(problems)
        )
    model.load_state_dict(state)
    return model.float(), config


def _load_tokenizer(spec: ModelSpec, folder: Path, config: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, ... alike
        message = " ".join(str(error).split())[:300]
        raise ModelLoadError(f"{spec.name}: cannot load the tokenizer in {folder}: {message}") from None
    # CLIP pools the text at the end-of-text token: the tokenizer must produce the config's one.
    eos = config.text_config.eos_token_id
    if eos != 2 and tokenizer.eos_token_id != eos:  # 2: legacy configs pool at the largest id
        raise ModelLoadError(
            f"{spec.name}: the tokenizer's end-of-text id {tokenizer.eos_token_id} differs from the "
            f"config's eos_token_id {eos}: wrong tokenizer for these weights"
        )
    return tokenizer


def _image_statistics(spec: ModelSpec, path: Path) -> tuple[list[float], list[float]]:
    if not path.is_file():
        return list(CLIP_MEAN), list(CLIP_STD)
    settings = json.loads(path.read_text(encoding="utf-8"))
    mean, std = settings.get("image_mean", CLIP_MEAN), settings.get("image_std", CLIP_STD)
    if len(mean) != 3 or len(std) != 3:
        raise ModelLoadError(f"{spec.name}: {path} needs 3 image_mean and image_std values")
    return [float(v) for v in mean], [float(v) for v in std]
