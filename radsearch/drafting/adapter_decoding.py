"""Beam search for the adapter drafter: trigram blocking, a length penalty, a length limit.

Deterministic: no sampling, and ties between equal scores go to the lower token class and the
earlier beam. Trigram blocking is applied to every candidate: a token that would repeat a trigram
already in its hypothesis gets a score of minus infinity, so it can never be chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# (prefixes, each one's parent row in the previous call or None at the first) -> (len, V) log-probs
Step = Callable[[list[list[int]], list[int] | None], torch.Tensor]


@dataclass(frozen=True)
class BeamSettings:
    beam: int = 3
    max_len: int = 64  # tokens, BOS and EOS included
    length_penalty: float = 1.0  # score / length ** this (0: raw sum of log-probs)
    block_trigrams: bool = True
    # Finding-aware constraint (after decoding): drop a written sentence that states a finding none of
    # the neighbour reports the decoder read states; off unless chosen on dev.
    neighbour_findings: bool = False


def repeats_trigram(tokens: Sequence[int], token: int) -> bool:
    """Whether appending ``token`` repeats a trigram already in ``tokens``."""
    if len(tokens) < 2:
        return False
    new = (tokens[-2], tokens[-1], token)
    return any(tuple(tokens[i:i + 3]) == new for i in range(len(tokens) - 2))


def blocked_tokens(tokens: Sequence[int]) -> list[int]:
    """Every token that would repeat a trigram of ``tokens`` (those that followed its last bigram)."""
    if len(tokens) < 2:
        return []
    last = (tokens[-2], tokens[-1])
    return [tokens[i + 2] for i in range(len(tokens) - 2) if (tokens[i], tokens[i + 1]) == last]


def normalised(score: float, length: int, penalty: float) -> float:
    return score / (max(1, length) ** penalty)


def beam_search(step: Step, bos: int, eos: int, settings: BeamSettings,
                banned: Sequence[int] = ()) -> list[int]:
    """The best hypothesis (classes, without BOS and EOS) by length-normalised log-probability."""
    alive: list[tuple[list[int], float]] = [([bos], 0.0)]
    parents: list[int] | None = None
    finished: list[tuple[list[int], float]] = []
    for _ in range(settings.max_len - 1):
        log_probs = step([tokens for tokens, _ in alive], parents).float().clone()
        for b, (tokens, score) in enumerate(alive):
            if banned:
                log_probs[b, list(banned)] = float("-inf")
            if settings.block_trigrams:
                blocked = blocked_tokens(tokens)
                if blocked:
                    log_probs[b, blocked] = float("-inf")
            log_probs[b] += score
        if len(alive[0][0]) == settings.max_len - 1:  # the last place left is for EOS
            keep = log_probs[:, eos].clone()
            log_probs.fill_(float("-inf"))
            log_probs[:, eos] = keep
        flat = log_probs.flatten()
        vocab = log_probs.shape[1]
        top = torch.topk(flat, min(flat.numel(), 2 * settings.beam)).indices.tolist()
        order = sorted(top, key=lambda i: (-float(flat[i]), i))
        next_alive, next_parents = [], []
        for index in order[:2 * settings.beam]:
            score = float(flat[index])
            if score == float("-inf"):
                break
            tokens = alive[index // vocab][0] + [index % vocab]
            if index % vocab == eos:
                finished.append((tokens, score))
            elif len(next_alive) < settings.beam:
                next_alive.append((tokens, score))
                next_parents.append(index // vocab)
            if len(next_alive) == settings.beam:
                break
        alive, parents = next_alive, next_parents
        if not alive or (len(finished) >= settings.beam and _cannot_improve(finished, alive, settings)):
            break
    pool = finished or alive
    best = max(pool, key=lambda h: normalised(h[1], len(h[0]) - 1, settings.length_penalty))
    return [t for t in best[0][1:] if t != eos]


def _cannot_improve(finished, alive, settings: BeamSettings) -> bool:
    """No live hypothesis can beat the best finished one: log-probs only fall as a hypothesis grows,
    so its best case is its score now, normalised by the longest length it could reach."""
    best = max(normalised(s, len(t) - 1, settings.length_penalty) for t, s in finished)
    reachable = max(normalised(s, settings.max_len - 1, settings.length_penalty) if s < 0 else s
                    for _, s in alive)
    return reachable <= best
