"""The adapter drafter through `draft()`: an indexed corpus, a trained run, cited sentences."""

from __future__ import annotations

import pytest

from radsearch.drafting.adapter_towers import FrozenTowers
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.errors import RadsearchError
from radsearch.training.drafter_data import build_data
from radsearch.training.drafter_train import DrafterTrainConfig, model_config, train_drafter
from radsearch.training.manifest import Pair
from tests.test_adapter_drafter import TINY


@pytest.fixture(scope="module")
def towers() -> FrozenTowers:
    from radsearch.encoders import create_model

    return FrozenTowers(create_model("radclip-mini"), grid=2)


@pytest.mark.slow
def test_draft_with_a_trained_run_cites_like_every_drafter(towers, tmp_path):
    """`draft(..., drafter=RUN)`: the run drafts an indexed corpus's query image; its sentences
    carry citations in the shared form."""
    from radsearch.drafting import draft
    from radsearch.indexer import index_folder
    from tests.drafting_corpus import REPORTS as STUDY_REPORTS, build_studies

    root = build_studies(tmp_path / "studies")
    index_folder(root, index=tmp_path / "index", model="radclip-mini", workers=0)
    rows = [Pair(root / f"study{n}" / "IM0001.dcm", report, "dev" if n == 5 else "train", patient, "t")
            for n, (patient, report) in enumerate(STUDY_REPORTS)]
    data = build_data(towers, rows[:5], rows[5:], rows[:5], k=2, max_len=24, neighbour_tokens=16)
    vocab = Vocab.build([e.tower_ids for e in data.train] + [r.tower_ids for r in data.corpus],
                        towers.pad, towers.tokenizer.unk_token_id, towers.bos, towers.eos)
    run = tmp_path / "run"
    train_drafter(towers, data, vocab, model_config(towers, vocab, **TINY),
                  DrafterTrainConfig(epochs=2, batch_size=5, lr=3e-3), run)
    result = draft(root / "study2" / "IM0001.dcm", index=tmp_path / "index", k=2, drafter=str(run))
    assert result.drafter == str(run) and result.sentences and result.draft
    assert len(result.neighbours) == 2
    as_json = result.to_dict()
    assert {"text", "section", "citations", "supported"} <= set(as_json["sentences"][0])
    with pytest.raises(RadsearchError, match="draft an image file"):
        draft(result.neighbours[0].study, index=tmp_path / "index", k=2, drafter=str(run))
