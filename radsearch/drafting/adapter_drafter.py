"""The ``adapter`` drafter: a report written token by token by adapters on the index's frozen
encoder towers and a small decoder that reads the query image's patch grids and the k neighbours'
reports (``adapter_model``); beam search with trigram blocking (``adapter_decoding``). Its sentences
are cited by the same code as every drafter's (``citations.cite``, run by the draft session).

``create_drafter("adapter")`` loads the built-in weights when they ship (``adapter_entry``);
``create_drafter(PATH)`` loads a run of ``radsearch train drafter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from radsearch.drafting.adapter_decoding import BeamSettings, beam_search
from radsearch.drafting.adapter_inputs import EncodedReport, encode_reports, neighbour_batch
from radsearch.drafting.adapter_model import AdapterDrafterNet, Cache
from radsearch.drafting.adapter_towers import FrozenTowers
from radsearch.drafting.adapter_vocab import Vocab
from radsearch.drafting.adapter_weights import DrafterWeights, load_weights
from radsearch.drafting.base import DraftLine, Drafter, Neighbour, ReportSource
from radsearch.drafting.findings import positive_findings
from radsearch.drafting.text import report_body
from radsearch.drafting.vocabulary import NO_FINDING
from radsearch.encoders.base import Encoder
from radsearch.errors import RadsearchError
from radsearch.reports import PREAMBLE, report_sentences


@torch.no_grad()
def generate(net: AdapterDrafterNet, towers: FrozenTowers, vocab: Vocab, grids: Sequence[torch.Tensor],
             neighbours: Sequence[EncodedReport], beam: BeamSettings) -> str:
    """One report for one image (``grids``: per stage ``(1, G*G, C)``) from its neighbours' reports."""
    net.eval()
    config = net.config
    nb = neighbour_batch([list(neighbours)[:config.k]], vocab)
    memory = net.memory([g.float() for g in grids], nb.states, nb.padding, nb.classes, nb.rank)

    cache = Cache()

    def step(prefixes: list[list[int]], parents: list[int] | None) -> torch.Tensor:
        # Only the newest token is run: the earlier ones' keys and values are in the cache.
        if parents is None:
            new = prefixes
        else:
            cache.reorder(torch.tensor(parents))
            new = [p[-1:] for p in prefixes]
        offset = len(prefixes[0]) - len(new[0])
        ids = torch.tensor([vocab.tower(p) for p in new])
        states = towers.text_states(ids, torch.ones_like(ids), causal=True, cache=cache, offset=offset)
        rows = memory.select(torch.zeros(len(prefixes), dtype=torch.long))
        classes = torch.tensor(new)
        return net(rows, states, classes, classes == Vocab.PAD, cache, offset, last_only=True)[:, -1]

    settings = BeamSettings(beam.beam, min(beam.max_len, config.max_len), beam.length_penalty,
                            beam.block_trigrams, beam.neighbour_findings)
    classes = beam_search(step, vocab.bos, vocab.eos, settings, banned=(Vocab.PAD, Vocab.UNK, vocab.bos))
    return towers.tokenizer.decode(vocab.tower(classes), skip_special_tokens=True).strip()


def supported_lines(lines: list[DraftLine], neighbour_reports: Sequence[str]) -> list[DraftLine]:
    """The lines stating no finding that none of ``neighbour_reports`` states; every line when none
    would be left (a draft is never empty)."""
    stated = set().union(*map(positive_findings, neighbour_reports))
    kept = [line for line in lines if positive_findings(line.text) - {NO_FINDING} <= stated]
    return kept or lines


def draft_lines(text: str) -> list[DraftLine]:
    """Written text as draft sentences, each begun with a capital letter (the tower is uncased)."""
    return [DraftLine(s.section, s.text[:1].upper() + s.text[1:]) for s in report_sentences(text)
            if s.text.strip()] or [DraftLine(PREAMBLE, text)]


class AdapterDrafter(Drafter):
    name = "adapter"
    needs_image = True

    def __init__(self, weights: DrafterWeights, name: str = "adapter", device: str = "cpu") -> None:
        self.weights = weights
        self.name = name
        self.device = device
        self.net = weights.network(device)
        self._towers: FrozenTowers | None = None
        self._encoder_id: int | None = None

    def towers(self, encoder: Encoder) -> FrozenTowers:
        """The encoder's frozen towers; refused unless they are those the weights were trained on."""
        if self._towers is None or self._encoder_id != id(encoder):
            if encoder.name != self.weights.encoder or encoder.weights_hash() != self.weights.encoder_hash:
                raise RadsearchError(
                    f"{self.weights.source}: trained on the towers of {self.weights.encoder} (weights "
                    f"{self.weights.encoder_hash[:12]}), but the index uses {encoder.name} (weights "
                    f"{encoder.weights_hash()[:12]}): train a drafter on this index's encoder")
            self._towers = FrozenTowers(encoder, grid=self.weights.config.grid)
            self._encoder_id = id(encoder)
        return self._towers

    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        raise RadsearchError("the adapter drafter writes from the query image: draft an image file "
                             "or an indexed study whose file can be read")

    def compose_image(self, pixels: np.ndarray, encoder: Encoder, query: np.ndarray,
                      neighbours: list[Neighbour], source: ReportSource) -> list[DraftLine]:
        """The draft of one image (uint8 ``(S, S)`` or ``(3, S, S)``) from its neighbours."""
        towers = self.towers(encoder)
        grids = towers.image_grids(pixels[None])
        reports = encode_reports(towers, [report_body(n.report) for n in neighbours],
                                 self.weights.config.neighbour_tokens)
        lines = draft_lines(generate(self.net, towers, self.weights.vocab, grids, reports,
                                     self.weights.beam))
        if self.weights.beam.neighbour_findings:
            read = neighbours[:self.weights.config.k]  # those the decoder read
            lines = supported_lines(lines, [report_body(n.report) for n in read])
        return lines


def load_adapter_drafter(ref: str | Path, device: str = "cpu") -> AdapterDrafter:
    """A trained run (its folder or weights file) as a drafter named by its path."""
    return AdapterDrafter(load_weights(ref), name=str(ref), device=device)

