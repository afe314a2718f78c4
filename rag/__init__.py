"""Retrieval for the assistant: knowledge-base documents, offline embeddings, the hybrid FAISS + BM25 index
(saved atomically, updated incrementally) and its LangChain retriever.

The names below are imported lazily, so `import rag` stays cheap (no faiss or torch until used).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "KBDocument": "rag.documents",
    "make_document": "rag.documents",
    "make_id": "rag.documents",
    "load_policies": "rag.documents",
    "Embedder": "rag.embeddings",
    "get_embedder": "rag.embeddings",
    "HybridIndex": "rag.index",
    "IndexConfig": "rag.index",
    "SearchHit": "rag.index",
    "UpsertStats": "rag.index",
    "KnowledgeRetriever": "rag.retriever",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
