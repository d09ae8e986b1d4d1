"""The adapter drafter: frozen towers, causal text side, incremental decoding, beam search with
trigram blocking, and a tiny drafter trained for a few steps on real towers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radsearch.drafting.adapter_decoding import BeamSettings, beam_search, blocked_tokens, repeats_trigram
from radsearch.drafting.adapter_drafter import generate, load_adapter_drafter, supported_lines
from radsearch.drafting.adapter_inputs import encode_reports, neighbour_batch, prefix_inputs
from radsearch.drafting.adapter_model import AdapterDrafterNet, Cache
from radsearch.drafting.adapter_towers import FrozenTowers, pad_ids
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.drafting.base import DraftLine
from radsearch.errors import RadsearchError
from radsearch.training.drafter_data import build_data
from radsearch.training.drafter_train import DrafterTrainConfig, model_config, train_drafter
from radsearch.training.manifest import Pair

TINY = dict(bottleneck=16, adapter_heads=2, adapter_ffn=32, d_model=32, heads=2, layers=1, ffn=64,
            dropout=0.0, max_len=24, neighbour_tokens=16, k=2)
REPORTS = ["No acute abnormality. The lungs are clear.",
           "Large right pleural effusion. The heart is enlarged.",
           "Small left pneumothorax. No effusion.",
           "Axial CT shows a mass in the liver. No ascites.",
           "The lungs are clear. No pneumothorax.",
           "Right lower lobe consolidation. Small effusion."]


@pytest.fixture(scope="module")
def towers() -> FrozenTowers:
    from radsearch.encoders import create_model

    return FrozenTowers(create_model("radclip-mini"), grid=2)


def _vocab(towers: FrozenTowers, texts) -> Vocab:
    return Vocab.build(towers.token_ids(texts, 64), towers.pad, towers.tokenizer.unk_token_id,
                       towers.bos, towers.eos)


def _net(towers: FrozenTowers, vocab: Vocab, **overrides) -> AdapterDrafterNet:
    torch.manual_seed(0)
    net = AdapterDrafterNet(model_config(towers, vocab, **{**TINY, **overrides})).eval()
    # Up-projections start at zero (adapters = identity); randomise them so that a leak through
    # an adapter would show.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".up_" in name:
                p.normal_(0, 0.5)
    return net


def _memory(net: AdapterDrafterNet, towers: FrozenTowers, vocab: Vocab, rows: int = 1):
    torch.manual_seed(1)
    grids = [torch.randn(1, towers.grid ** 2, c).expand(rows, -1, -1) for c in towers.shape.stage_channels]
    reports = encode_reports(towers, REPORTS[:2], 16)
    nb = neighbour_batch([reports] * rows, vocab)
    return net.memory(grids, nb.states, nb.padding, nb.classes, nb.rank)


def test_sizes_are_read_from_the_towers(towers):
    assert towers.shape.stage_channels == tuple(i["num_chs"] for i in towers.image.feature_info[-3:])
    assert towers.shape.text_width == towers.bert.config.hidden_size
    assert towers.shape.text_depths[-1] == towers.bert.config.num_hidden_layers


def test_text_tower_both_ways_matches_the_library_forward(towers):
    ids, mask = pad_ids(towers.token_ids(REPORTS[:3], 64), towers.pad)
    ours = towers.text_states(ids, mask, causal=False)
    with torch.no_grad():
        theirs = towers.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    keep = mask.bool()
    for depth, states in zip(towers.shape.text_depths, ours):
        assert torch.allclose(states[keep], theirs[depth][keep], atol=1e-4)


def test_a_future_token_never_changes_an_earlier_position(towers):
    """Teacher forcing must see what decoding sees: change the tokens from position 5 on, and no
    earlier position's prediction may move (text tower, adapters and decoder all causal)."""
    vocab = _vocab(towers, REPORTS)
    net = _net(towers, vocab)
    memory = _memory(net, towers, vocab, rows=2)
    first = vocab.classes(towers.token_ids([REPORTS[1]], 64)[0])[:-1]
    second = first[:5] + vocab.classes(towers.token_ids([REPORTS[3]], 64)[0])[5:len(first)]
    assert first[5:] != second[5:]
    with torch.no_grad():
        states, classes, padding = prefix_inputs(towers, vocab, [first, second])
        out = net(memory, states, classes, padding)
    assert torch.allclose(out[0, :5], out[1, :5], atol=1e-5)
    assert not torch.allclose(out[0, 5:len(second)], out[1, 5:len(second)], atol=1e-3)


def test_vision_never_reads_the_report_being_written(towers):
    vocab = _vocab(towers, REPORTS)
    net = _net(towers, vocab)
    a, b = _memory(net, towers, vocab), _memory(net, towers, vocab)
    assert torch.equal(a.tokens, b.tokens)  # memory is built before and without any written token


def test_incremental_decoding_equals_the_full_forward(towers):
    vocab = _vocab(towers, REPORTS)
    net = _net(towers, vocab)
    memory = _memory(net, towers, vocab)
    prefix = vocab.classes(towers.token_ids([REPORTS[0]], 64)[0])[:-1]
    with torch.no_grad():
        states, classes, padding = prefix_inputs(towers, vocab, [prefix])
        full = net(memory, states, classes, padding)[0]
        cache = Cache()
        for t in range(len(prefix)):
            ids = torch.tensor([vocab.tower(prefix[t:t + 1])])
            step_states = towers.text_states(ids, torch.ones_like(ids), True, cache=cache, offset=t)
            step = net(memory, step_states, torch.tensor([prefix[t:t + 1]]), torch.zeros(1, 1, dtype=torch.bool),
                       cache, t, last_only=True)[0, -1]
            assert torch.allclose(step, full[t], atol=1e-4), t


def _scripted(preferences: dict[tuple[int, ...], list[float]], vocab: int = 6):
    """A step function whose log-probs depend only on the last two tokens."""
    def step(prefixes, parents):
        rows = []
        for p in prefixes:
            scores = torch.full((vocab,), -5.0)
            scores[torch.tensor(preferences.get(tuple(p[-2:]), [0.0] * vocab)) > 0] = -0.1
            rows.append(scores)
        return torch.stack(rows)
    return step


def test_trigram_blocking_is_applied():
    # Tokens: 0 BOS, 1 EOS, 2 'a', 3 'b'. The model always prefers 'a b a b ...' and never stops.
    def step(prefixes, parents):
        out = torch.full((len(prefixes), 4), -6.0)
        for i, p in enumerate(prefixes):
            out[i, 3 if p[-1] == 2 else 2] = -0.01
            out[i, 1] = -4.0
        return out

    blocked = beam_search(step, 0, 1, BeamSettings(beam=2, max_len=12, block_trigrams=True))
    free = beam_search(step, 0, 1, BeamSettings(beam=2, max_len=12, block_trigrams=False))
    assert free[:6] == [2, 3, 2, 3, 2, 3]
    assert not any(repeats_trigram(blocked[:i], blocked[i]) for i in range(len(blocked)))
    assert len(blocked) < len(free)
    assert repeats_trigram([2, 3, 2, 3], 2) and blocked_tokens([2, 3, 2, 3]) == [2]


def test_length_penalty_and_max_len():
    # 'a' after anything is likely, EOS a little less: without a length penalty the shortest wins.
    def step(prefixes, parents):
        out = torch.full((len(prefixes), 6), -9.0)
        for i, p in enumerate(prefixes):
            out[i, 2 + len(p) % 4] = -0.05  # a new token each time: no trigram repeats
            out[i, 1] = -1.0
        return out

    short = beam_search(step, 0, 1, BeamSettings(beam=3, max_len=20, length_penalty=0.0))
    long = beam_search(step, 0, 1, BeamSettings(beam=3, max_len=20, length_penalty=2.0))
    capped = beam_search(step, 0, 1, BeamSettings(beam=3, max_len=6, length_penalty=2.0))
    assert len(short) < len(long)
    assert len(capped) <= 4  # BOS and EOS take two of the six places
    assert beam_search(step, 0, 1, BeamSettings(beam=3, max_len=20, length_penalty=2.0)) == long


def _pairs(folder: Path, split: str, texts: list[str], offset: int) -> list[Pair]:
    rng = np.random.default_rng(offset)
    out = []
    for i, text in enumerate(texts):
        path = folder / f"{split}{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        out.append(Pair(path, text, split, f"case{offset + i}", "tiny"))
    return out


@pytest.fixture(scope="module")
def tiny_run(towers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    train = _pairs(folder, "train", REPORTS * 2, 0)
    dev = _pairs(folder, "dev", REPORTS[:3], 100)
    data = build_data(towers, train, dev, train, k=2, max_len=24, neighbour_tokens=16)
    vocab = Vocab.build([e.tower_ids for e in data.train] + [r.tower_ids for r in data.corpus],
                        towers.pad, towers.tokenizer.unk_token_id, towers.bos, towers.eos)
    config = model_config(towers, vocab, **TINY)
    out = folder / "run"
    settings = DrafterTrainConfig(epochs=4, batch_size=4, lr=3e-3, warmup_fraction=0.1)
    result = train_drafter(towers, data, vocab, config, settings, out)
    return towers, data, vocab, config, settings, out, result


def test_training_lowers_the_loss_and_keeps_the_best_dev_epoch(tiny_run):
    *_, out, result = tiny_run
    losses = [r["train_loss"] for r in result["history"]]
    assert losses[-1] < losses[0]
    best = min(result["history"], key=lambda r: r["dev_loss"])
    assert result["best"]["epoch"] == best["epoch"]
    assert json.loads((out / "history.json").read_text())["best"] == result["best"]


def test_training_neighbours_never_share_the_row_case(tiny_run):
    _, data, *_ = tiny_run
    for i, example in enumerate(data.train):
        assert i not in example.neighbours  # the corpus is the train rows: never the row itself


def test_resume_does_not_train_again(tiny_run):
    towers, data, vocab, config, settings, out, result = tiny_run
    again = train_drafter(towers, data, vocab, config, settings, out)
    assert again["history"] == result["history"]
    with pytest.raises(RadsearchError, match="other settings"):
        train_drafter(towers, data, vocab, config, DrafterTrainConfig(epochs=5, batch_size=4), out)


def test_a_trained_run_drafts_and_holds_only_trainable_weights(tiny_run):
    from safetensors.torch import load_file

    towers, data, vocab, config, _, out, _ = tiny_run
    drafter = load_adapter_drafter(out)
    saved = load_file(str(out / "drafter.safetensors"))
    assert set(saved) == set(drafter.net.state_dict())
    assert not any(name.startswith(("bert.", "image.", "blocks.")) for name in saved)
    example = data.dev[0]
    grids = [g[None].float() for g in example.grids]
    nb = [data.corpus[j] for j in example.neighbours]
    text = generate(drafter.net, towers, vocab, grids, nb, BeamSettings(beam=2, max_len=24))
    assert text and text == generate(drafter.net, towers, vocab, grids, nb,
                                     BeamSettings(beam=2, max_len=24))


def test_finding_constraint_drops_only_sentences_stating_findings_no_neighbour_states():
    lines = [DraftLine("findings", "Axial CT shows a large mass in the right lung."),
             DraftLine("findings", "Axial CT of the chest."),
             DraftLine("findings", "There is a pleural effusion.")]
    kept = supported_lines(lines, ["Small left pleural effusion.", "No acute abnormality."])
    assert [line.text for line in kept] == ["Axial CT of the chest.", "There is a pleural effusion."]
    assert supported_lines(lines[:1], ["No acute abnormality."]) == lines[:1]  # never empty


def test_decoding_settings_of_a_file_without_the_constraint_load_it_off():
    assert BeamSettings(**{"beam": 3, "max_len": 64, "length_penalty": 1.0,
                           "block_trigrams": True}).neighbour_findings is False


def test_a_run_refuses_other_towers(tiny_run):
    from radsearch.encoders import create_model

    *_, out, _ = tiny_run
    drafter = load_adapter_drafter(out)
    with pytest.raises(RadsearchError, match="trained on the towers"):
        drafter.towers(create_model("radclip-mini-untrained"))



def test_training_refuses_a_manifest_without_dev_rows(tmp_path):
    from radsearch.training.drafter_run import train_drafter_from_manifests

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,text,split\na.png,Lungs clear.,train\nb.png,Effusion.,test\n")
    with pytest.raises(RadsearchError, match="no rows of split 'dev'"):
        train_drafter_from_manifests([manifest], tmp_path / "run")
