"""Chunk embeddings that run offline.

The default embedder is WordLlama (``wordllama`` on PyPI): a static token-embedding model
whose 256-dimensional weights and tokenizer ship *inside* the wheel, so nothing is fetched
from a model hub. (``WordLlama.load`` looks for the tokenizer in a folder name the wheel does
not use and would then try to download it; pointing ``cache_dir`` at the package folder makes
it find the shipped file, and ``disable_download`` makes any miss an error, never a download.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL = "wordllama-l2_supercat-256"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, rows of unit norm (zero rows stay zero)."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (rows of zeros are left as zeros)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass
class WordLlamaEmbedder:
    """WordLlama with the weights shipped in its wheel (no network)."""

    dim: int = 256
    name: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        import wordllama
        from wordllama import WordLlama

        package_dir = Path(wordllama.__file__).parent
        self._model = WordLlama.load(dim=self.dim, cache_dir=package_dir, disable_download=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(self._model.embed(list(texts)))


def load_embedder(name: str = DEFAULT_MODEL) -> Embedder:
    """The embedder named ``name`` (only the shipped WordLlama model is offered)."""
    if name != DEFAULT_MODEL:
        raise ValueError(f"embedding model {name!r} is not available offline; use {DEFAULT_MODEL!r}")
    return WordLlamaEmbedder()
