"""The adapter drafter's output vocabulary: a subset of the text tower's own WordPiece ids.

The decoder writes the tower's own tokens, so the ids that enter the frozen text tower are the
ids it was trained on (the reference code indexed CLIP's BPE table with ids of its own vocabulary).
Only the ids seen in the training texts are classes of the output layer, which keeps it small; a
neighbour's token outside them can still be read (the towers take every id) but not written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch


class Vocab:
    """Output classes <-> tower ids. Class 0 is padding, 1 unknown, then the tower's BOS and EOS."""

    PAD, UNK = 0, 1

    def __init__(self, tower_ids: Sequence[int]) -> None:
        self.tower_ids = list(tower_ids)
        self.index = {tower: i for i, tower in enumerate(self.tower_ids)}

    @classmethod
    def build(cls, rows: Iterable[Sequence[int]], pad: int, unk: int, bos: int, eos: int,
              min_count: int = 1) -> Vocab:
        """Classes for the ids seen at least ``min_count`` times in ``rows``, most frequent first."""
        counts = Counter(i for row in rows for i in row)
        special = [pad, unk, bos, eos]
        rest = [i for i, c in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                if c >= min_count and i not in special]
        return cls(special + rest)

    def __len__(self) -> int:
        return len(self.tower_ids)

    @property
    def bos(self) -> int:
        return 2

    @property
    def eos(self) -> int:
        return 3

    def classes(self, tower_ids: Sequence[int]) -> list[int]:
        return [self.index.get(i, self.UNK) for i in tower_ids]

    def class_tensor(self, tower_ids: torch.Tensor) -> torch.Tensor:
        """Tower ids ``(...)`` as classes (unknown ones as ``UNK``), same shape."""
        table = self.lookup_table(int(tower_ids.max()) + 1 if tower_ids.numel() else 1)
        return table[tower_ids]

    def lookup_table(self, size: int) -> torch.Tensor:
        table = torch.full((max(size, max(self.tower_ids) + 1),), self.UNK, dtype=torch.long)
        table[torch.tensor(self.tower_ids)] = torch.arange(len(self.tower_ids))
        return table

    def tower(self, classes: Sequence[int]) -> list[int]:
        return [self.tower_ids[c] for c in classes]
