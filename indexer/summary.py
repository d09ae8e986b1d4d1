"""What an index run reports: its counts, failures, warnings and the time each stage took."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexSummary:
    """What one run did. ``failures`` and ``skips`` are (path, reason) pairs of this run."""

    index: str
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    removed: int = 0
    missing: int = 0
    images: int = 0
    reports: int = 0
    backend: str = ""
    sent: int = 0  # points sent to the back end by this run
    deleted: int = 0  # points deleted from it
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)
    # Files skipped as neither images nor reports, by kind ({".bval": 2, ".tar.gz": 1}); not in
    # ``skipped``, which counts the files the catalog records as skipped
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how images were grouped into studies
    # Each stage's wall time in this process and the items it handled, in pipeline order:
    # {"read": {"seconds": 1.2, "items": 300}, ...} (``runner.STAGE_ITEMS`` says what items are)
    stages: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        data["skips"] = [{"path": p, "reason": r} for p, r in self.skips]
        data["stages"] = {name: dict(times) for name, times in self.stages.items()}
        return data

    def stage_line(self) -> str:
        """The stage times in one line: ``model 1.2 s, discover 0.1 s, read 2.0 s, ...``."""
        return ", ".join(f"{name} {times['seconds']:.1f} s" for name, times in self.stages.items())


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    images: int
