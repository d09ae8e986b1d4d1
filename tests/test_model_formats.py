"""Every model format create_model loads, each built here as a tiny random model: never downloaded."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from radsearch.encoders import (
    HubUnavailableError,
    ModelLoadError,
    UnknownModelError,
    create_model,
    model_name_help,
    parse_model_name,
    save_checkpoint,
)
from radsearch.encoders import _registry
from radsearch.encoders._radclip_weights import (
    IMAGE_PROJECTION,
    LOGIT_SCALE,
    PROJECTION_SHAPES,
    TEXT_PROJECTION,
)
from radsearch.errors import RadsearchError

torch = pytest.importorskip("torch")

TEXTS = ["right lower lobe consolidation", "no acute findings", ""]
BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
# A tiny ViT + text transformer in open_clip's config format (SimpleTokenizer vocabulary).
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_ARCH = "radsearch-test-tiny-vit"


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def _check_encoder(encoder, dim: int, size: int) -> None:
    """Shapes, unit norms, determinism and the recorded preprocessing of a loaded model."""
    assert encoder.dim == dim and encoder.image_size == size
    images = _images(3, size)
    image_vectors = encoder.encode_images(images)
    text_vectors = encoder.encode_texts(TEXTS)
    for vectors, n in ((image_vectors, 3), (text_vectors, 3)):
        assert vectors.shape == (n, dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(encoder.encode_images(images), image_vectors)
    np.testing.assert_array_equal(encoder.encode_texts(TEXTS), text_vectors)
    assert not np.allclose(text_vectors[0], text_vectors[1])
    assert encoder.encode_texts([]).shape == (0, dim)
    assert encoder.encode_images(np.zeros((0, size, size), np.uint8)).shape == (0, dim)
    description = encoder.describe()
    assert description["name"] == encoder.name and len(description["weights_hash"]) == 64
    assert description["preprocessing"]["image_size"] == size
    json.dumps(description)
    # The recorded name loads the very same model again (an index reopens its model by name).
    assert create_model(encoder.name) is encoder


def _assert_same_tensors(state: dict, saved: dict) -> None:
    assert set(state) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name].cpu(), tensor), name


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("hashing-tiny", "registered"),
        ("open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip"),
        ("open_clip:ViT-B-32@./weights.pt", "open_clip"),
        ("open_clip:./exported", "open_clip_dir"),
        (BIOMEDCLIP, "hf_hub"),
        ("hf-clip:./clip", "hf_clip"),
        ("hf-clip:w.bin?config=cfg/config.json&tokenizer=tok", "hf_clip"),
        ("checkpoint:runs/a", "checkpoint"),
        ("./runs/a", "checkpoint"),
    ],
)
def test_every_name_form_parses_to_a_canonical_name(name: str, kind: str) -> None:
    spec = parse_model_name(name)
    assert spec.kind == kind
    assert parse_model_name(spec.name) == spec  # canonical: parsing it again changes nothing
    assert all(os.path.isabs(p) for p in spec.local_paths())


def test_paths_become_absolute_and_pretrained_folds_into_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert parse_model_name("runs/a").name == f"checkpoint:{tmp_path}/runs/a"
    spec = parse_model_name("hf-clip:w.bin?tokenizer=tok&config=c.json")
    assert spec.name == f"hf-clip:{tmp_path}/w.bin?config={tmp_path}/c.json&tokenizer={tmp_path}/tok"
    assert parse_model_name("open_clip:ViT-B-32", pretrained="openai").name == "open_clip:ViT-B-32@openai"
    assert parse_model_name("open_clip:ViT-B-32", pretrained="w.pt").weights == f"{tmp_path}/w.pt"


@pytest.mark.parametrize(
    ("name", "pretrained", "message"),
    [
        ("nope", None, r"unknown model 'nope'; available: .*hashing-tiny.*open_clip:ARCH@TAG"),
        ("open_clip:ViT-B-32", None, r"needs weights: open_clip:ViT-B-32@TAG"),
        ("open_clip:ViT-B-32@openai", "openai", "pretrained= does not apply"),
        ("hashing-tiny", "openai", "hashing-tiny reads no weights file"),
        ("hf-hub:just-a-name", None, "needs ORG/REPO"),
        ("hf-clip:/w.bin?cfg=/c.json", None, "option 'cfg=/c.json' not understood"),
    ],
)
def test_bad_names_are_refused_in_one_line(name: str, pretrained: str | None, message: str) -> None:
    with pytest.raises(UnknownModelError, match=message) as caught:
        create_model(name, pretrained=pretrained)
    assert "\n" not in str(caught.value)


def test_models_help_explains_every_name_form() -> None:
    text = model_name_help()
    for prefix in ("open_clip:ARCH@TAG", "open_clip:ARCH@/path", "open_clip:/path/dir", "hf-hub:ORG/REPO",
                   "hf-clip:/path/dir", "?config=", "checkpoint:/path/dir"):
        assert prefix in text


# --- open_clip --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny_open_clip(open_clip, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random tiny CLIP's state dict, and its architecture registered with open_clip."""
    folder = tmp_path_factory.mktemp("open_clip_arch")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _open_clip_folder(folder: Path, state: dict, preprocess: dict | None = None) -> Path:
    """open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": preprocess or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def test_open_clip_architecture_with_a_local_checkpoint_file(
    tiny_open_clip: dict, tmp_path: Path
) -> None:
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_open_clip, weights)
    encoder = create_model(f"open_clip:{TINY_ARCH}@{weights}")
    assert encoder.name == f"open_clip:{TINY_ARCH}@{weights}"
    _check_encoder(encoder, dim=16, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_open_clip)
    assert encoder.preprocessing()["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert create_model(f"open_clip:{TINY_ARCH}", pretrained=str(weights)) is encoder


def test_open_clip_folder_uses_its_own_normalisation(tiny_open_clip: dict, tmp_path: Path) -> None:
    preprocess = {"mean": [0.5] * 3, "std": [0.25] * 3}
    folder = _open_clip_folder(tmp_path / "exported", tiny_open_clip, preprocess)
    encoder = create_model(f"open_clip:{folder}")
    _check_encoder(encoder, dim=16, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_open_clip)
    assert (encoder.mean, encoder.std) == ((0.5,) * 3, (0.25,) * 3)
    # Grayscale replicated to 3 channels, then (pixel / 255 - mean) / std.
    images = _images(2, 32)
    pixels = torch.from_numpy(images).float()[:, None].expand(-1, 3, -1, -1) / 255
    with torch.no_grad():
        expected = encoder.model.encode_image((pixels - 0.5) / 0.25).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode_images(images), expected, atol=1e-5)


def test_open_clip_folder_without_weights_is_refused(tmp_path: Path, open_clip) -> None:
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    with pytest.raises(ModelLoadError, match="no weights file"):
        create_model(f"open_clip:{tmp_path}")


def test_open_clip_unknown_architecture_or_tag(tiny_open_clip: dict) -> None:
    with pytest.raises(ModelLoadError, match="'ViT-Nope' is not an open_clip architecture"):
        create_model("open_clip:ViT-Nope@openai")
    with pytest.raises(ModelLoadError, match=r"'nope' is neither a pretrained tag of ViT-B-32 \(openai, laion"):
        create_model("open_clip:ViT-B-32@nope")
    with pytest.raises(ModelLoadError, match="no weights file"):
        create_model(f"open_clip:{TINY_ARCH}@/no/such/file.pt")


def _fails_at_once(name: str, match: str) -> None:
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match=match) as caught:
        create_model(name)
    assert time.monotonic() - start < 3.0  # the hub client would retry for ~25 s
    assert isinstance(caught.value, RadsearchError) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["open_clip:ViT-B-32@laion2b_s34b_b79k", BIOMEDCLIP])
def test_a_hub_download_offline_fails_at_once(name: str, open_clip) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    _fails_at_once(name, r"needs a download of .* offline \(HF_HUB_OFFLINE is set\)")


def test_an_unresolvable_hub_fails_at_once_without_the_offline_flag(
    open_clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                     "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)

    def no_dns(host: str, *args: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    _fails_at_once(BIOMEDCLIP, r"offline \(huggingface.co cannot be resolved")


def _hub_cache(root: Path, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache holding ``repo_id``; returns its snapshot folder to fill."""
    import huggingface_hub.constants

    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return repo / "snapshots" / commit


def test_hf_hub_model_loads_through_open_clip_from_the_hub_cache(
    tiny_open_clip: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hf-hub: path, offline, with the repository already in the Hugging Face cache."""
    _open_clip_folder(_hub_cache(tmp_path, "radsearch-test/tiny-clip", monkeypatch), tiny_open_clip)
    encoder = create_model("hf-hub:radsearch-test/tiny-clip")
    _check_encoder(encoder, dim=16, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_open_clip)


def test_a_cached_pretrained_tag_loads_offline_with_its_settings(
    open_clip, tiny_open_clip: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from open_clip.pretrained import _PRETRAINED, _pcfg
    from safetensors.torch import save_file

    tag = _pcfg(hf_hub="radsearch-test/tiny-tag/", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    monkeypatch.setitem(_PRETRAINED, TINY_ARCH, {"tiny_tag": tag})
    snapshot = _hub_cache(tmp_path, "radsearch-test/tiny-tag", monkeypatch)
    snapshot.mkdir(parents=True)
    save_file(tiny_open_clip, str(snapshot / "open_clip_model.safetensors"))
    encoder = create_model(f"open_clip:{TINY_ARCH}@tiny_tag")
    _check_encoder(encoder, dim=16, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_open_clip)
    assert (encoder.mean, encoder.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_missing_open_clip_package_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(ModelLoadError, match=r"needs open_clip_torch: pip install 'radsearch\[clip\]'"):
        create_model(f"open_clip:{tmp_path}")


# --- Hugging Face CLIPModel -------------------------------------------------------------------


def _byte_level_alphabet() -> list[str]:
    """CLIP's byte -> printable character table (GPT-2 byte-level BPE)."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in visible]
    return [chr(c) for c in visible] + [chr(256 + i) for i in range(len(extra))]


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random tiny CLIPModel saved with save_pretrained, with a tiny byte-level CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = _byte_level_alphabet()
    tokens = [*chars, *(c + "</w>" for c in chars), "lu", "lun", "lung</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("l", "u"), ("lu", "n"), ("lun", "g</w>")])
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    folder = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"folder": folder, "state": state}


def test_hf_clip_folder(tiny_hf_clip: dict) -> None:
    folder = tiny_hf_clip["folder"]
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    encoder = create_model(f"hf-clip:{folder}")
    _check_encoder(encoder, dim=24, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_hf_clip["state"])
    assert encoder.preprocessing()["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])


def test_hf_clip_bare_state_dict_plus_config(tiny_hf_clip: dict, tmp_path: Path) -> None:
    """RadCLIP's layout: a pickled CLIPModel state dict, the config and tokenizer elsewhere."""
    import shutil

    folder = tiny_hf_clip["folder"]
    config_dir = tmp_path / "clip-config"
    config_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, config_dir / name)
    (config_dir / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3,
                                                                     "image_std": [0.2] * 3}))
    # Saved from DataParallel, with the position_ids buffers older transformers kept: both tolerated.
    state = {f"module.{k}": v for k, v in tiny_hf_clip["state"].items()}
    state["module.text_model.embeddings.position_ids"] = torch.arange(16)[None]
    torch.save(state, tmp_path / "radclip.bin")
    encoder = create_model(f"hf-clip:{tmp_path / 'radclip.bin'}?config={config_dir / 'config.json'}")
    _check_encoder(encoder, dim=24, size=32)
    _assert_same_tensors(encoder.model.state_dict(), tiny_hf_clip["state"])
    assert (encoder.mean, encoder.std) == ((0.5,) * 3, (0.2,) * 3)
    # Same weights and tokenizer as the folder model: the same text embeddings.
    reference = create_model(f"hf-clip:{folder}")
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), reference.encode_texts(TEXTS), atol=1e-6)
    assert encoder.weights_hash() != reference.weights_hash()  # other image statistics


def test_hf_clip_refuses_missing_tokenizer_config_or_pickled_code(
    tiny_hf_clip: dict, tmp_path: Path
) -> None:
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_hf_clip["folder"] / "config.json", bare / "config.json")
    torch.save(tiny_hf_clip["state"], bare / "w.bin")
    with pytest.raises(ModelLoadError, match=r"no tokenizer files in .*bare .*&tokenizer="):
        create_model(f"hf-clip:{bare / 'w.bin'}?config={bare / 'config.json'}")
    with pytest.raises(ModelLoadError, match=r"needs its config: hf-clip:.*\?config="):
        create_model(f"hf-clip:{bare / 'w.bin'}")
    options = f"?config={bare / 'config.json'}&tokenizer={tiny_hf_clip['folder']}"
    torch.save({"weights": tiny_hf_clip["state"], "hook": os.system}, bare / "evil.bin")
    with pytest.raises(ModelLoadError, match="refusing to unpickle code"):
        create_model(f"hf-clip:{bare / 'evil.bin'}{options}")
    torch.save({"text_model.nope": torch.zeros(1)}, bare / "wrong.bin")
    with pytest.raises(ModelLoadError, match="do not fit the CLIPModel .*missing .*unexpected text_model.nope"):
        create_model(f"hf-clip:{bare / 'wrong.bin'}{options}")


# --- radsearch checkpoints --------------------------------------------------------------------


def _radclip_tensors(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in PROJECTION_SHAPES.items()}
    tensors[LOGIT_SCALE] = torch.tensor(2.5)
    return tensors


def test_radsearch_checkpoint_round_trip(tmp_path: Path) -> None:
    tensors = _radclip_tensors(0)
    folder = save_checkpoint(tensors, tmp_path / "ckpt", card="# tiny test model\n",
                             params={"image_size": 64})
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "weights.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "radclip-mini" and config["dim"] == 512
    assert config["params"] == {"image_tower": "tf_efficientnet_lite0", "image_size": 64}
    assert config["preprocessing"]["image_size"] == 64
    encoder = create_model(str(folder))
    assert encoder.name == f"checkpoint:{folder}"
    assert create_model(f"checkpoint:{folder}") is encoder
    for name in (IMAGE_PROJECTION, TEXT_PROJECTION):
        np.testing.assert_array_equal(encoder._weights.projections[name], tensors[name].numpy())
    assert encoder._weights.logit_scale == 2.5
    _check_encoder(encoder, dim=512, size=64)

    # Saving again in place: create_model notices the new files and loads them.
    # float16, as training exports its weights.
    retrained = {name: t.half() for name, t in _radclip_tensors(1).items()}
    save_checkpoint(retrained, folder, card="# retrained\n", params={"image_size": 64})
    reloaded = create_model(str(folder))
    assert reloaded is not encoder and reloaded.weights_hash() != encoder.weights_hash()
    np.testing.assert_array_equal(reloaded._weights.projections[IMAGE_PROJECTION],
                                  retrained[IMAGE_PROJECTION].float().numpy())
    # An encoder saves what it runs: a copy with another input size has another hash.
    copy = save_checkpoint(reloaded, tmp_path / "copy", card="copy", params={"image_size": 96})
    loaded = create_model(f"checkpoint:{copy}")
    assert loaded.image_size == 96 and loaded.weights_hash() != reloaded.weights_hash()
    np.testing.assert_array_equal(loaded._weights.projections[TEXT_PROJECTION],
                                  reloaded._weights.projections[TEXT_PROJECTION])


def test_radsearch_checkpoint_refusals(tmp_path: Path, tiny_hf_clip: dict) -> None:
    with pytest.raises(ValueError, match="image_projection.weight must have shape"):
        save_checkpoint({TEXT_PROJECTION: torch.zeros(512, 384)}, tmp_path / "a", card="x")
    assert not (tmp_path / "a" / "config.json").exists()
    with pytest.raises(ValueError, match="image tower 'tf_efficientnet_lite9' cannot be built"):
        save_checkpoint(_radclip_tensors(0), tmp_path / "b", card="x",
                        params={"image_tower": "tf_efficientnet_lite9"})
    with pytest.raises(ValueError, match="needs a model card"):
        save_checkpoint(_radclip_tensors(0), tmp_path / "b", card=" ")
    with pytest.raises(ValueError, match="not empty and holds no radsearch checkpoint"):
        save_checkpoint(_radclip_tensors(0), tiny_hf_clip["folder"], card="x")
    with pytest.raises(ModelLoadError, match=r"not a radsearch checkpoint .*use hf-clip:"):
        create_model(str(tiny_hf_clip["folder"]))
    with pytest.raises(ModelLoadError, match="no such folder"):
        create_model(str(tmp_path / "missing"))
    folder = save_checkpoint(_radclip_tensors(0), tmp_path / "c", card="x")
    with open(folder / "weights.safetensors", "ab") as handle:
        handle.write(b" ")
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        create_model(str(folder))


@pytest.fixture(autouse=True)
def _fresh_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    # Models built here live in tmp folders: keep them out of the process-wide cache.
    monkeypatch.setattr(_registry, "_INSTANCES", {})
