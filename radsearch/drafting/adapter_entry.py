"""The ``adapter`` drafter's registry entry, kept free of torch so that listing drafters stays light.

It is registered only when its built-in weights ship; a trained run is always usable by its path
(``create_drafter(RUN_FOLDER)``, ``--drafter RUN_FOLDER``).
"""

from __future__ import annotations

from pathlib import Path

from radsearch.drafting._registry import register_drafter
from radsearch.drafting.base import Drafter

BUILTIN_FILE = Path(__file__).resolve().parents[1] / "model_weights" / "adapter-drafter.safetensors"


def load_trained(ref: str | Path) -> Drafter:
    """A run of ``radsearch train drafter`` (its folder or weights file) as a drafter."""
    from radsearch.drafting.adapter_drafter import load_adapter_drafter

    return load_adapter_drafter(ref)


if BUILTIN_FILE.is_file():
    @register_drafter("adapter", description="adapters on the index's frozen encoder towers and a "
                      "decoder grounded on the neighbours' reports (trained on medpix2)")
    def _adapter() -> Drafter:
        from radsearch.drafting.adapter_drafter import AdapterDrafter
        from radsearch.drafting.adapter_weights import load_weights

        return AdapterDrafter(load_weights(BUILTIN_FILE))
