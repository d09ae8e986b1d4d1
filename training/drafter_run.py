"""`radsearch train drafter` as a library function: manifests in, a trained adapter drafter out.

Training rows are the manifests' ``train`` rows, the kept epoch is chosen on their ``dev`` rows
(never ``test``). Neighbours come from the corpus: ``--corpus`` manifests (their ``train`` rows when
they have a split column), else the training rows themselves; a row is never its own neighbour nor
one of its case or patient. Report texts for the decoder's text-only pretraining are read from
``.txt`` files (one report a line) or a JSON annotation file of ``{"train": [{"report": ...}]}``
(its train part only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from radsearch.drafting.adapter_decoding import BeamSettings
from radsearch.drafting.adapter_towers import FrozenTowers
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.errors import RadsearchError
from radsearch.training.drafter_data import build_data, text_only_examples
from radsearch.training.drafter_train import DrafterTrainConfig, model_config, train_drafter
from radsearch.training.manifest import read_manifest


def read_report_texts(path: Path) -> list[str]:
    """Report texts for pretraining: a .txt file (one a line) or a JSON annotation file's train part."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RadsearchError(f"{path}: cannot read ({error.strerror})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
            return [row["report"] for row in data["train"] if row.get("report", "").strip()]
        except (ValueError, KeyError, TypeError) as error:
            raise RadsearchError(f"{path}: not an annotation file with a 'train' list of "
                                 f"{{'report': ...}} ({type(error).__name__})") from None
    return [line for line in raw.splitlines() if line.strip()]


def train_drafter_from_manifests(
    manifests: Sequence[Path], out: Path, *, corpus: Sequence[Path] = (), model: str = "radclip-mini",
    pretrain_texts: Sequence[Path] = (), config: DrafterTrainConfig = DrafterTrainConfig(),
    beam: BeamSettings = BeamSettings(), network: dict | None = None, resume: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Train an adapter drafter on ``model``'s frozen towers; the history and the kept epoch.
    ``network``: ``AdapterConfig`` fields to change (sizes, k, ablations)."""
    from radsearch.encoders import create_model

    rows = [p for path in manifests for p in read_manifest(path)]
    train = [p for p in rows if p.split == "train"]
    dev = [p for p in rows if p.split == "dev"]
    pool = [p for path in corpus for p in read_manifest(path) if p.split == "train"] if corpus else train
    if not train:
        raise RadsearchError(f"{', '.join(map(str, manifests))}: no rows of split 'train' to learn from")
    if not dev:
        raise RadsearchError(f"{', '.join(map(str, manifests))}: no rows of split 'dev': the kept epoch "
                             "is chosen on dev, never on test")
    drafted = {p.image for p in dev} | {p.image for p in rows if p.split == "test"}
    pool = [p for p in pool if p.image not in drafted]  # dev and test rows never teach
    encoder = create_model(model, device=config.device)
    towers = FrozenTowers(encoder)
    shape = model_config(towers, Vocab([0]), **(network or {}))
    data = build_data(towers, train, dev, pool, shape.k, shape.max_len, shape.neighbour_tokens, log)
    pretrain = []
    for path in pretrain_texts:
        texts = read_report_texts(path)
        log(f"{path}: {len(texts)} reports for text-only pretraining")
        pretrain += text_only_examples(towers, texts, shape.max_len)
    vocab = Vocab.build([e.tower_ids for e in [*data.train, *pretrain]] + [r.tower_ids for r in data.corpus],
                        towers.pad, towers.tokenizer.unk_token_id, towers.bos, towers.eos)
    shape = model_config(towers, vocab, **(network or {}))
    result = train_drafter(towers, data, vocab, shape, config, Path(out), pretrain, beam, resume, log)
    return {**result, "train_rows": len(train), "dev_rows": len(dev), "corpus_rows": len(pool),
            "pretrain_reports": len(pretrain)}
