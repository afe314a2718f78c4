"""Keep the saved knowledge-base index in step with the active pipeline run.

    stats = update_index()          # documents of the active run -> <home>/index, only changed ones embedded
    retriever = get_retriever(k=4)  # LangChain retriever over the saved index

`update_index` builds every document (rag.factsheets.build_documents), syncs them into the saved
HybridIndex (new and changed documents embedded, in batches with a progress message each, from
`embedding_text`: a SKU sheet's heading, any other document's text; documents no longer produced removed;
the rest untouched) and saves it atomically (rag.index: generation files, then the
manifest swap).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.errors import InputError
from forecasting.factbook import FactBook
from forecasting.store import ResultsStore
from rag.documents import KBDocument, dedupe
from rag.embeddings import TextEncoder
from rag.factsheets import build_documents, embedding_text
from rag.index import HybridIndex
from rag.retriever import KnowledgeRetriever

INDEX_STEPS = 4
"""Progress messages `update_index` sends besides one per embedding batch (for a progress bar's total)."""
EMBED_BATCH = 256


def update_index(
    store: ResultsStore | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    folder: str | Path | None = None,
    embedder: TextEncoder | None = None,
    run_id: str | None = None,
    policy_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Sync the index in `folder` (default `<home>/index`) with the documents of the active run (or
    `run_id`); returns the run id, folder, document counts by type, added/updated/metadata_only/removed/
    unchanged/embedded counts and the seconds it took."""
    say = progress or (lambda _message: None)
    start = time.perf_counter()
    say("reading the active run")
    book = FactBook.from_store(store, run_id)
    say("building documents")
    docs = dedupe(build_documents(book, policy_dir))
    index = HybridIndex.open(folder, embedder)
    vectors, embedded = _embed_changed(index, docs, say)
    stats = index.upsert(docs, vectors)  # the same as index.sync(docs), with the vectors made above
    keep = {d.id for d in docs}
    stats.removed = index.remove([i for i in index.ids() if i not in keep])
    say("saving the index")
    saved = index.save(folder)
    return {
        "run_id": book.run_id,
        "folder": str(saved),
        "documents": len(index),
        "by_type": dict(Counter(d.kind for d in docs)),
        "added": stats.added,
        "updated": stats.updated,
        "metadata_only": stats.metadata_only,
        "removed": stats.removed,
        "unchanged": stats.unchanged,
        "embedded": embedded,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _embed_changed(
    index: HybridIndex, docs: list[KBDocument], say: Callable[..., None]
) -> tuple[np.ndarray | None, int]:
    """Embed the new and changed texts in batches (one progress message each); rows of unchanged
    documents stay zero (the index ignores them). Returns (vectors or None when nothing changed, count)."""
    fresh = [i for i, d in enumerate(docs) if index.content_hash(d.id) != d.content_hash]
    batches = max(1, math.ceil(len(fresh) / EMBED_BATCH))
    try:  # a progress bar that takes a total learns how many batches follow
        say(
            f"embedding {len(fresh):,} new or changed of {len(docs):,} documents", total=INDEX_STEPS + batches
        )
    except TypeError:
        say(f"embedding {len(fresh):,} new or changed of {len(docs):,} documents")
    if not fresh:
        return None, 0
    vectors: np.ndarray | None = None
    for b in range(batches):
        rows = fresh[b * EMBED_BATCH : (b + 1) * EMBED_BATCH]
        vecs = index.embedder.encode([embedding_text(docs[i]) for i in rows])
        if vectors is None:
            vectors = np.zeros((len(docs), vecs.shape[1]), dtype=np.float32)
        vectors[rows] = vecs
        say(f"embedded {min((b + 1) * EMBED_BATCH, len(fresh)):,} of {len(fresh):,}")
    return vectors, len(fresh)


def load_index(folder: str | Path | None = None, embedder: TextEncoder | None = None) -> HybridIndex:
    """The saved index; InputError when `stockpilot index` has not been run yet."""
    path = Path(folder) if folder is not None else HybridIndex.default_folder()
    if not (path / "manifest.json").is_file():
        raise InputError("no knowledge index yet: run `stockpilot index`")
    return HybridIndex.load(path, embedder)


def get_retriever(
    k: int = 4,
    filters: dict[str, Any] | None = None,
    *,
    index: HybridIndex | None = None,
    folder: str | Path | None = None,
) -> KnowledgeRetriever:
    """A LangChain retriever over `index`, or over the saved index in `folder` (default `<home>/index`)."""
    return KnowledgeRetriever(index=index or load_index(folder), k=k, filters=filters)
