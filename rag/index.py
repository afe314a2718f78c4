"""The hybrid knowledge-base index: dense FAISS vectors + BM25 + exact code matches, fused by reciprocal rank.

- Dense: all-MiniLM-L6-v2 unit vectors in `IndexIDMap2(IndexFlatIP)` (exact cosine) keyed by an int64
  slot per document; from `ivf_min_size` vectors on (default 50,000) it switches once, without re-embedding,
  to `IndexIVFFlat` (inner product, about sqrt(n) lists, `nprobe` probed; `retrain_dense()` re-clusters),
  which keeps search time flat as the knowledge base grows. Both support `remove_ids`: updates never rebuild.
- Lexical: BM25 (rank-bm25's Okapi formula) over an inverted index, scored on the query terms' postings.
- Codes: a query token that names a code (85123A, FOODS_3_080/CA_1, 4466) and equals a document's
  sku/item/store/supplier/category metadata or its id key, or appears as a code in its text, ranks that
  document in a third list fused with weight 3 x match strength (2 per exact metadata match, 1 per part or
  text mention): an exact code match outranks anything that only reads or means alike.
- Incremental: each document id keeps a content hash of its text; `upsert` embeds only new or changed
  texts, replaces metadata in place, and `remove`/`sync` delete ids. Nothing is ever re-embedded on load.
- Saved atomically to a folder: every save writes new generation files (temp file, fsync, os.replace),
  then swaps `manifest.json`, the single commit point, then deletes the previous generation. A crash at
  any moment leaves either the old or the new index readable, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from forecasting.errors import InputError
from forecasting.io import atomic_write_bytes, atomic_write_text
from rag.documents import KBDocument, dedupe, parse_id
from rag.embeddings import TextEncoder, get_embedder
from rag.lexical import BM25Postings, code_tokens, is_text_code, tokenize

FORMAT_VERSION = 1
CODE_FIELDS = ("sku", "item", "store", "supplier", "category", "dept")
"""Metadata fields whose values are codes a query can name exactly."""

_GEN_FILE = re.compile(r"^(docs|dense|lexical)-(\d+)\.(jsonl|faiss|npz)$")
_TMP_FILE = re.compile(r"^\.((docs|dense|lexical)-\d+\.(jsonl|faiss|npz)|manifest\.json)\..+\.tmp$")


@dataclass
class IndexConfig:
    """Tuning knobs; the defaults are what the benchmark measures."""

    rrf_k: int = 60  # reciprocal rank fusion constant: score = sum(weight / (rrf_k + rank))
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    # code list: weight x match strength (2 per exact sku/store/... or id match, 1 per '/' part or mention in
    # the text), so a document whose metadata names the query's code beats one that only mentions it
    code_weight: float = 3.0
    candidates: int = 50  # per list, at least; 4 x k when k is larger
    ivf_min_size: int | None = 50_000  # switch flat -> IVF at this many vectors (None: always exact flat)
    nprobe: int = 32
    exact_filter_max: int = 512  # filtered searches over at most this many docs score every one exactly
    search_threads: int = 1  # FAISS OpenMP threads per query (more only adds overhead for one query)
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_epsilon: float = 0.25


@dataclass
class UpsertStats:
    """What an update did: counts of documents, and how many texts were sent to the embedding model."""

    added: int = 0
    updated: int = 0  # text changed: re-embedded
    metadata_only: int = 0  # same text, new metadata: not re-embedded
    unchanged: int = 0
    removed: int = 0
    embedded: int = 0


@dataclass
class SearchHit:
    """One result: the document, its fused score and the parts of that score.

    Unpacks as `(doc, score)`: `for doc, score in index.search(...)`.
    """

    doc: KBDocument
    score: float
    dense_score: float | None  # cosine similarity to the query (every hit; None in lexical mode)
    lexical_score: float | None  # BM25 (0.0 when no query term occurs in it; None in dense mode)
    dense_rank: int | None = None  # 1-based rank in each fused list, None when not in its top candidates
    lexical_rank: int | None = None
    code_rank: int | None = None
    codes: tuple[str, ...] = ()  # query codes this document matched

    def __iter__(self) -> Iterator[Any]:
        return iter((self.doc, self.score))

    def parts(self) -> dict[str, Any]:
        """The score parts as a flat dict (what the retriever puts into Document metadata)."""
        return {
            "score": self.score,
            "dense_score": self.dense_score,
            "lexical_score": self.lexical_score,
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
            "code_rank": self.code_rank,
            "matched_codes": list(self.codes),
        }


Filters = Mapping[str, Any]


def _fkey(value: Any) -> str:
    return str(value).casefold()


class _Dense:
    """FAISS vectors keyed by slot: exact `IndexIDMap2(IndexFlatIP)`, or `IndexIVFFlat` once large."""

    def __init__(self, dim: int, cfg: IndexConfig, index: Any = None) -> None:
        self.dim, self.cfg = dim, cfg
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if self.kind == "flat" and self.cfg.ivf_min_size and self.ntotal + len(ids) >= self.cfg.ivf_min_size:
            self._to_ivf(ids, vecs)
        elif len(ids):
            self.index.add_with_ids(vecs, ids)

    def _to_ivf(self, new_ids: np.ndarray, new_vecs: np.ndarray) -> None:
        """Move every vector (old and new) into a freshly trained IVF index; no text is re-embedded."""
        old_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        old = self.index.index.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim))
        self._train_ivf(np.concatenate([old_ids, new_ids]), np.concatenate([old, new_vecs]))

    def retrain(self, ids: np.ndarray) -> None:
        """Re-cluster an IVF index over its current vectors (`ids`: every live slot), e.g. after it grew
        well past the size it was trained at; a flat index needs nothing."""
        if self.kind == "ivf" and len(ids):
            self._train_ivf(ids, self.reconstruct(ids))

    def _train_ivf(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        nlist = max(1, min(int(np.sqrt(len(ids))), len(ids) // 39, 4096))  # >= 39 training points a list
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 20
        ivf.cp.seed = 1234
        rng = np.random.default_rng(1234)
        sample = vecs[rng.choice(len(vecs), size=min(len(vecs), 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.add_with_ids(vecs, ids)
        ivf.nprobe = self.cfg.nprobe
        self.index = ivf

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (slots, cosine) for a (dim,) query; `allowed` (with its bool `mask` by slot) restricts the
        search to those slots: scored exactly when few, post-filtered when most, else by a FAISS selector."""
        k = min(k, self.ntotal)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if allowed is None:
            return self._search(q, k)
        if len(allowed) <= self.cfg.exact_filter_max:
            sims = self.reconstruct(allowed) @ q
            top = np.argsort(-sims, kind="stable")[:k]
            return allowed[top], sims[top]
        if mask is None:
            mask = np.zeros(int(allowed.max()) + 1, dtype=bool)
            mask[allowed] = True
        if 2 * len(allowed) >= self.ntotal:  # broad filter: over-fetch, then filter
            ids, sims = self._search(q, min(self.ntotal, 3 * k * self.ntotal // len(allowed) + 10))
            keep = mask[ids]
            if keep.sum() >= k:
                return ids[keep][:k], sims[keep][:k]
        selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        if self.kind == "ivf":  # probe enough lists to meet about 2k allowed vectors, then all if short
            nlist = int(self.index.nlist)
            nprobe = min(nlist, max(self.cfg.nprobe, int(np.ceil(2 * k * nlist / len(allowed)))))
            ids, sims = self._search(q, k, selector, nprobe)
            if len(ids) < k and nprobe < nlist:
                ids, sims = self._search(q, k, selector, nlist)
            return ids, sims
        return self._search(q, k, selector)

    def _search(
        self, q: np.ndarray, k: int, selector: Any = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = None
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=nprobe or self.cfg.nprobe)
        elif selector is not None:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.cfg.search_threads)
        try:
            sims, ids = self.index.search(q.reshape(1, -1), k, params=params)
        finally:
            faiss.omp_set_num_threads(before)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), sims[0][keep]

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int, cfg: IndexConfig) -> _Dense:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = cfg.nprobe
        return cls(dim, cfg, index)


class HybridIndex:
    """Documents by stable id, searchable by meaning (dense), words (BM25) and exact codes, fused by RRF.

    >>> index = HybridIndex()
    >>> index.upsert(load_policies())            # embeds only new or changed texts
    >>> for doc, score in index.search("approval limit for a 30k order", k=3): ...
    >>> index.save()                             # .stockpilot/index by default
    >>> index = HybridIndex.load()
    """

    def __init__(self, embedder: TextEncoder | None = None, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self._embedder = embedder
        self.model_name: str | None = None
        self._dense: _Dense | None = None
        self._lex = BM25Postings(self.config.bm25_k1, self.config.bm25_b, self.config.bm25_epsilon)
        self._docs: list[KBDocument | None] = []  # by slot
        self._hashes: list[str | None] = []  # by slot
        self._slot: dict[str, int] = {}  # doc id -> slot
        self._alive = np.zeros(0, dtype=bool)
        self._codes_exact: dict[str, set[int]] = {}
        self._codes_part: dict[str, set[int]] = {}
        self._columns: dict[str, tuple[dict[str, int], np.ndarray, dict[int, set[int]]]] = {}
        self._lock = threading.RLock()
        self._generation = 0

    # ---------------------------------------------------------------- basics
    @property
    def embedder(self) -> TextEncoder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def size(self) -> int:
        """Number of live documents."""
        return len(self._slot)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot

    def get(self, doc_id: str) -> KBDocument | None:
        slot = self._slot.get(doc_id)
        return None if slot is None else self._docs[slot]

    def content_hash(self, doc_id: str) -> str | None:
        slot = self._slot.get(doc_id)
        return None if slot is None else self._hashes[slot]

    def ids(self, filters: Filters | None = None) -> list[str]:
        """Ids of the live documents, optionally only those matching `filters`."""
        with self._lock:
            if not filters:
                return list(self._slot)
            slots = np.flatnonzero(self._mask(filters))
            return [self._docs[s].id for s in slots.tolist()]  # type: ignore[union-attr]

    @property
    def dense_kind(self) -> str:
        return self._dense.kind if self._dense is not None else "flat"

    def memory_bytes(self) -> dict[str, int]:
        """Approximate memory of the numeric parts (vectors, postings); texts and dicts not counted."""
        dense = 0 if self._dense is None else self._dense.ntotal * self._dense.dim * 4
        return {"dense": dense, "lexical": self._lex.nbytes}

    # ---------------------------------------------------------------- updates
    def add(self, docs: Iterable[KBDocument], vectors: np.ndarray | None = None) -> UpsertStats:
        """Add new documents; raises InputError when an id is already indexed."""
        docs = list(docs)
        taken = [d.id for d in docs if d.id in self._slot]
        if taken:
            raise InputError(f"already indexed: {', '.join(taken[:5])} (use upsert)")
        return self.upsert(docs, vectors)

    def update(self, docs: Iterable[KBDocument], vectors: np.ndarray | None = None) -> UpsertStats:
        """Update existing documents; raises InputError when an id is not indexed."""
        docs = list(docs)
        missing = [d.id for d in docs if d.id not in self._slot]
        if missing:
            raise InputError(f"not indexed: {', '.join(missing[:5])} (use upsert)")
        return self.upsert(docs, vectors)

    def upsert(self, docs: Iterable[KBDocument], vectors: np.ndarray | None = None) -> UpsertStats:
        """Insert or update documents by id; only texts whose content hash changed are embedded.

        `vectors` (optional, one unit row per document in `docs`, no repeated ids) supplies embeddings
        computed elsewhere with the same model, e.g. cached ones; rows of unchanged documents are ignored.
        """
        docs = list(docs)
        if vectors is not None:
            if len(vectors) != len(docs) or len({d.id for d in docs}) != len(docs):
                raise InputError("vectors must have one row per document and the ids must be unique")
            row_of = {d.id: i for i, d in enumerate(docs)}
        else:
            docs = dedupe(docs)
        stats = UpsertStats()
        with self._lock:
            fresh: list[KBDocument] = []
            for doc in docs:
                slot = self._slot.get(doc.id)
                if slot is None:
                    fresh.append(doc)
                    stats.added += 1
                elif self._hashes[slot] != doc.content_hash:
                    fresh.append(doc)
                    stats.updated += 1
                elif self._docs[slot].metadata != doc.metadata:  # type: ignore[union-attr]
                    self._set_metadata(slot, doc)
                    stats.metadata_only += 1
                else:
                    stats.unchanged += 1
            if not fresh:
                return stats
            if vectors is None:
                vecs = self._embed([d.text for d in fresh])
                stats.embedded = len(fresh)
            else:
                vecs = np.array(vectors[[row_of[d.id] for d in fresh]], dtype=np.float32, order="C")
                faiss.normalize_L2(vecs)
                self._check_model()
            if vecs.ndim != 2 or (self._dense is not None and vecs.shape[1] != self._dense.dim):
                raise InputError(
                    f"vectors of shape {vecs.shape} do not fit this index of dimension {self._dense.dim}"
                )
            old = [self._slot[d.id] for d in fresh if d.id in self._slot]
            self._drop_slots(old)
            start = len(self._docs)
            slots = np.arange(start, start + len(fresh), dtype=np.int64)
            self._grow(start + len(fresh))
            for slot, doc in zip(slots.tolist(), fresh, strict=True):
                self._docs.append(doc)
                self._hashes.append(doc.content_hash)
                self._slot[doc.id] = slot
                self._alive[slot] = True
                self._lex.add(slot, tokenize(doc.text))
                self._index_meta(slot, doc)
            if self._dense is None:
                self._dense = _Dense(vecs.shape[1], self.config)
            self._dense.add(slots, vecs)
            self._lex.maybe_merge(self._alive)
        return stats

    def retrain_dense(self) -> None:
        """Re-cluster the IVF lists over the current vectors (no re-embedding); worth it after the index
        has grown several-fold since it switched to IVF. A flat index is left as it is."""
        with self._lock:
            if self._dense is not None:
                self._dense.retrain(np.flatnonzero(self._alive))

    def remove(self, doc_ids: Iterable[str]) -> int:
        """Remove documents by id (unknown ids are ignored); returns how many were removed."""
        with self._lock:
            slots = [self._slot[i] for i in set(doc_ids) if i in self._slot]
            self._drop_slots(slots)
            return len(slots)

    def sync(self, docs: Iterable[KBDocument], scope: Filters | None = None) -> UpsertStats:
        """Make the indexed documents matching `scope` equal to `docs`: upsert them, remove the others.

        E.g. `sync(sku_sheets, scope={"type": "sku"})` after a forecast run: a few changed SKUs are
        re-embedded, vanished SKUs are removed, and policies or reports are left alone.
        """
        docs = dedupe(docs)
        with self._lock:
            stats = self.upsert(docs)
            keep = {d.id for d in docs}
            stats.removed = self.remove([i for i in self.ids(scope) if i not in keep])
        return stats

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        self._check_model()
        vecs = self.embedder.encode(texts)
        if vecs.ndim != 2 or len(vecs) != len(texts):
            raise RuntimeError("embedder returned the wrong shape")
        return vecs

    def _check_model(self) -> None:
        name = self.embedder.name
        if self.model_name is None:
            self.model_name = name
        elif self.model_name != name:
            raise InputError(
                f"this index was built with {self.model_name!r} but the embedder is {name!r}; rebuild it"
            )

    def _grow(self, n: int) -> None:
        if n > len(self._alive):
            grown = np.zeros(max(n, 2 * len(self._alive), 1024), dtype=bool)
            grown[: len(self._alive)] = self._alive
            self._alive = grown
            for field_name, (codes, col, multi) in self._columns.items():
                bigger = np.full(len(grown), -1, dtype=np.int32)
                bigger[: len(col)] = col
                self._columns[field_name] = (codes, bigger, multi)

    def _drop_slots(self, slots: Sequence[int]) -> None:
        if not slots:
            return
        for slot in slots:
            doc = self._docs[slot]
            assert doc is not None
            self._lex.remove(slot, tokenize(doc.text))
            self._unindex_meta(slot, doc)
            del self._slot[doc.id]
            self._docs[slot] = None
            self._hashes[slot] = None
            self._alive[slot] = False
        if self._dense is not None:
            self._dense.remove(np.asarray(slots, dtype=np.int64))

    def _set_metadata(self, slot: int, doc: KBDocument) -> None:
        self._unindex_meta(slot, self._docs[slot])  # type: ignore[arg-type]
        self._docs[slot] = doc
        self._index_meta(slot, doc)

    # ---------------------------------------------------------------- metadata: codes and filter columns
    @staticmethod
    def _meta_codes(doc: KBDocument) -> tuple[set[str], set[str]]:
        """(exact codes, part codes) of a document: its id key and CODE_FIELDS values, '/' parts apart."""
        values = [parse_id(doc.id)[1]]
        for name in CODE_FIELDS:
            v = doc.metadata.get(name)
            if isinstance(v, list):
                values.extend(str(x) for x in v if x is not None)
            elif v is not None and v != "":
                values.append(str(v))
        exact = {v.lower() for v in values}
        parts = {p for v in exact if "/" in v for p in v.split("/") if p} - exact
        return exact, parts

    def _index_meta(self, slot: int, doc: KBDocument) -> None:
        exact, parts = self._meta_codes(doc)
        for c in exact:
            self._codes_exact.setdefault(c, set()).add(slot)
        for c in parts:
            self._codes_part.setdefault(c, set()).add(slot)
        for name in self._columns:
            self._set_column(name, slot, doc.metadata.get(name))

    def _unindex_meta(self, slot: int, doc: KBDocument) -> None:
        exact, parts = self._meta_codes(doc)
        for table, codes in ((self._codes_exact, exact), (self._codes_part, parts)):
            for c in codes:
                members = table.get(c)
                if members is not None:
                    members.discard(slot)
                    if not members:
                        del table[c]
        for name in self._columns:
            self._set_column(name, slot, None)

    def _set_column(self, name: str, slot: int, value: Any) -> None:
        codes, col, multi = self._columns[name]
        multi.pop(slot, None)
        if value is None:
            col[slot] = -1
        elif isinstance(value, list):
            col[slot] = -2
            multi[slot] = {codes.setdefault(_fkey(v), len(codes)) for v in value}
        else:
            col[slot] = codes.setdefault(_fkey(value), len(codes))

    def _column(self, name: str) -> tuple[dict[str, int], np.ndarray, dict[int, set[int]]]:
        """The filter column of a metadata field (built on first use, then kept up to date)."""
        if name not in self._columns:
            self._columns[name] = ({}, np.full(len(self._alive), -1, dtype=np.int32), {})
            for slot in self._slot.values():
                self._set_column(name, slot, self._docs[slot].metadata.get(name))  # type: ignore[union-attr]
        return self._columns[name]

    def _mask(self, filters: Filters | None) -> np.ndarray:
        """Bool mask by slot: live documents whose metadata matches every filter (a list means any of)."""
        mask = self._alive.copy()
        for name, wanted in (filters or {}).items():
            values = wanted if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
            codes, col, multi = self._column(name)
            ids = [codes[k] for k in (_fkey(v) for v in values) if k in codes]
            hit = np.isin(col, ids) if ids else np.zeros(len(col), dtype=bool)
            for slot, members in multi.items():
                if members.intersection(ids):
                    hit[slot] = True
            mask &= hit
        return mask

    # ---------------------------------------------------------------- search
    def search(
        self,
        query: str,
        k: int = 5,
        filters: Filters | None = None,
        *,
        mode: str = "hybrid",
        query_vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """The `k` best documents for `query`, best first.

        `filters` restrict by metadata, e.g. {"type": "sku"} or {"type": ["policy", "supplier"],
        "store": "CA_1"} (case-insensitive; a list matches any value). `mode` is "hybrid" (dense + BM25 +
        codes, fused), "dense" or "lexical". `query_vector` skips embedding the query (it must come from
        the same model).
        """
        if mode not in ("hybrid", "dense", "lexical"):
            raise InputError(f"unknown search mode {mode!r} (use hybrid, dense or lexical)")
        if k <= 0 or not query.strip() or not self._slot:
            return []
        q = None
        if (
            mode != "lexical"
        ):  # embed outside the lock: concurrent searches do not wait for each other's model
            q = query_vector if query_vector is not None else self._query_vector(query)
            q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        with self._lock:
            if not self._slot:
                return []
            cfg = self.config
            n_cand = max(cfg.candidates, 4 * k)
            mask = self._mask(filters) if filters else self._alive
            allowed = np.flatnonzero(mask) if filters else None
            if allowed is not None and len(allowed) == 0:
                return []

            # (name, weight, slots best first, per-slot multipliers or None)
            lists: list[tuple[str, float, np.ndarray, np.ndarray | None]] = []
            lex_full = np.zeros(len(self._alive))
            if mode != "dense":
                lex_mask = None if not filters and self._lex.clean else mask
                lex_full = self._lex.score_array(tokenize(query), lex_mask, len(self._alive))
                hit = np.flatnonzero(lex_full > 0)  # partition only these: introselect crawls over many ties
                top = hit[_top(lex_full[hit], n_cand)]
                if len(top):
                    lists.append(("lexical", cfg.lexical_weight, top, None))
            dense_of: dict[int, float] = {}
            if q is not None:
                d_slots, d_sims = self._dense.search(q, n_cand, allowed, mask)  # type: ignore[union-attr]
                dense_of = dict(zip(d_slots.tolist(), d_sims.tolist(), strict=True))
                lists.append(("dense", cfg.dense_weight, d_slots, None))
            codes: list[str] = []
            if mode == "hybrid":
                cased = code_tokens(query, keep_case=True)
                codes = list(dict.fromkeys(c.lower() for c in cased))
                strength = self._code_strength(codes, mask)
                self._case_bonus(strength, cased)
                matched = np.flatnonzero(strength)
                if len(matched):
                    prior = np.zeros(len(self._alive))
                    for s, v in _rrf(lists, cfg.rrf_k).items():
                        prior[s] = v
                    order = np.lexsort((matched, -lex_full[matched], -prior[matched], -strength[matched]))
                    top_codes = matched[order[:n_cand]]
                    lists.append(("code", cfg.code_weight, top_codes, strength[top_codes].astype(np.float64)))
            fused = _rrf(lists, cfg.rrf_k)
            best = sorted(fused, key=lambda s: (-fused[s], -dense_of.get(s, -2.0), s))[:k]
            missing = [s for s in best if s not in dense_of]
            if missing and q is not None:  # exact cosine for hits found only by BM25 or codes
                sims = self._dense.reconstruct(np.asarray(missing, dtype=np.int64)) @ q  # type: ignore[union-attr]
                dense_of.update(zip(missing, sims.tolist(), strict=True))
            ranks = {name: {s: r for r, s in enumerate(slots.tolist(), 1)} for name, _, slots, _ in lists}
            hits = []
            for s in best:
                doc = self._docs[s]
                assert doc is not None
                hits.append(
                    SearchHit(
                        doc=doc,
                        score=float(fused[s]),
                        dense_score=float(dense_of[s]) if s in dense_of else None,
                        lexical_score=float(lex_full[s]) if mode != "dense" else None,
                        dense_rank=ranks.get("dense", {}).get(s),
                        lexical_rank=ranks.get("lexical", {}).get(s),
                        code_rank=ranks.get("code", {}).get(s),
                        codes=self._codes_of(s, doc, codes) if "code" in ranks else (),
                    )
                )
            return hits

    def _query_vector(self, query: str) -> np.ndarray:
        self._check_model()
        return self.embedder.encode_query(query)

    def _code_strength(self, codes: Sequence[str], mask: np.ndarray) -> np.ndarray:
        """Per slot: 2 for each query code equal to a CODE_FIELDS value or the id key, 1 for each code equal
        to a '/' part of one (store CA_1 of FOODS_3_090/CA_1) or mentioned as a code in the text."""
        strength = np.zeros(len(self._alive), dtype=np.int32)
        for code in codes:
            for table, weight in ((self._codes_exact, 2), (self._codes_part, 1)):
                members = table.get(code)
                if members:
                    strength[np.fromiter(members, dtype=np.int64, count=len(members))] += weight
            if is_text_code(code):
                tid = self._lex.vocab.get(code)
                if tid is not None:
                    strength[self._lex.postings(tid)[0]] += 1
        strength[~mask] = 0
        return strength

    def _case_bonus(self, strength: np.ndarray, cased: Sequence[str]) -> None:
        """Among tied best code matches, +1 per query code that a document's codes hold in the query's exact
        case (Online Retail has both 84534B and 84534b, two different products)."""
        if not strength.any():
            return
        top = np.flatnonzero(strength == strength.max())
        if not 1 < len(top) <= 256:
            return
        wanted = set(cased)
        for slot in top.tolist():
            doc = self._docs[slot]
            assert doc is not None
            values = [
                parse_id(doc.id)[1],
                *(str(doc.metadata.get(f)) for f in CODE_FIELDS if doc.metadata.get(f)),
            ]
            present = set(values).union(p for v in values for p in v.split("/"))
            strength[slot] += len(wanted & present)

    def _codes_of(self, slot: int, doc: KBDocument, codes: Sequence[str]) -> tuple[str, ...]:
        """The query codes this document matched (for explaining a hit)."""
        exact, parts = self._meta_codes(doc)
        words = set(tokenize(doc.text))
        return tuple(c for c in codes if c in exact or c in parts or (is_text_code(c) and c in words))

    # ---------------------------------------------------------------- persistence
    @staticmethod
    def default_folder() -> Path:
        from forecasting.settings import get_settings

        return get_settings().home / "index"

    def save(self, folder: str | Path | None = None) -> Path:
        """Save to `folder` (default `<STOCKPILOT_HOME>/index`) atomically; returns the folder.

        Layout: manifest.json (the commit point, names the files below), docs-<gen>.jsonl (id, slot, hash,
        text, metadata per live document), dense-<gen>.faiss (the FAISS index), lexical-<gen>.npz (BM25
        postings and statistics). Files of older generations and of interrupted saves are deleted after
        the manifest is swapped.
        """
        folder = Path(folder) if folder is not None else self.default_folder()
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock, _save_lock(folder):
            previous = _read_manifest(folder)
            gen = max(self._generation, previous.get("generation", 0) if previous else 0) + 1
            names = {"docs": f"docs-{gen:06d}.jsonl", "dense": f"dense-{gen:06d}.faiss"}
            names["lexical"] = f"lexical-{gen:06d}.npz"
            written: list[Path] = []
            try:
                lines = (
                    json.dumps(
                        {
                            "id": d.id,
                            "slot": s,
                            "hash": self._hashes[s],
                            "text": d.text,
                            "metadata": d.metadata,
                        },
                        ensure_ascii=False,
                    )
                    for s, d in enumerate(self._docs)
                    if d is not None
                )
                written.append(atomic_write_bytes(folder / names["docs"], "\n".join(lines).encode("utf-8")))
                dense = self._dense.to_bytes() if self._dense is not None else b""
                written.append(atomic_write_bytes(folder / names["dense"], dense))
                import io

                buf = io.BytesIO()
                np.savez(buf, **self._lex.to_arrays(self._alive))
                written.append(atomic_write_bytes(folder / names["lexical"], buf.getvalue()))
                manifest = {
                    "format": FORMAT_VERSION,
                    "generation": gen,
                    "files": names,
                    "count": len(self._slot),
                    "next_slot": len(self._docs),
                    "model": self.model_name,
                    "dim": self._dense.dim if self._dense is not None else None,
                    "dense_kind": self.dense_kind,
                    "config": asdict(self.config),
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            _fsync_dir(folder)
            self._generation = gen
            _remove_stale(folder, set(names.values()))
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path | None = None,
        embedder: TextEncoder | None = None,
        config: IndexConfig | None = None,
    ) -> HybridIndex:
        """Load a saved index (no embedding, no torch needed until the first query or update)."""
        folder = Path(folder) if folder is not None else cls.default_folder()
        manifest = _read_manifest(folder)
        if manifest is None:
            raise InputError(f"no index in {folder} (manifest.json missing)")
        if manifest.get("format") != FORMAT_VERSION:
            raise InputError(
                f"index in {folder} has format {manifest.get('format')}, expected {FORMAT_VERSION}"
            )
        saved_cfg = {
            k: v for k, v in manifest.get("config", {}).items() if k in IndexConfig.__dataclass_fields__
        }
        self = cls(embedder, config or IndexConfig(**saved_cfg))
        self.model_name = manifest.get("model")
        self._generation = int(manifest["generation"])
        files = manifest["files"]
        n = int(manifest["next_slot"])
        self._docs = [None] * n
        self._hashes = [None] * n
        self._grow(n)
        with open(folder / files["docs"], encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                doc = KBDocument(rec["id"], rec["text"], rec["metadata"])
                slot = int(rec["slot"])
                self._docs[slot], self._hashes[slot] = doc, rec["hash"]
                self._slot[doc.id] = slot
                self._alive[slot] = True
                self._index_meta(slot, doc)
        dense = (folder / files["dense"]).read_bytes()
        if dense:
            self._dense = _Dense.from_bytes(dense, int(manifest["dim"]), self.config)
        with np.load(folder / files["lexical"], allow_pickle=False) as npz:
            self._lex = BM25Postings.from_arrays({k: npz[k] for k in npz.files})
        if self._dense is not None and self._dense.ntotal != len(self._slot):
            raise InputError(
                f"index in {folder} is inconsistent: {self._dense.ntotal} vectors, {len(self)} docs"
            )
        return self

    @classmethod
    def open(cls, folder: str | Path | None = None, embedder: TextEncoder | None = None) -> HybridIndex:
        """Load the index in `folder`, or return an empty one when none was saved there yet."""
        folder = Path(folder) if folder is not None else cls.default_folder()
        if _read_manifest(folder) is None:
            return cls(embedder)
        return cls.load(folder, embedder)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, best first."""
    if len(scores) > n:
        part = np.argpartition(scores, len(scores) - n)[-n:]  # no negated copy of a long array
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def _rrf(lists: list[tuple[str, float, np.ndarray, np.ndarray | None]], k: int) -> dict[int, float]:
    """Weighted reciprocal rank fusion: slot -> sum of weight x multiplier / (k + rank) over the lists."""
    out: dict[int, float] = {}
    for _name, weight, slots, mult in lists:
        m = mult.tolist() if mult is not None else [1.0] * len(slots)
        for rank, (s, x) in enumerate(zip(slots.tolist(), m, strict=True), 1):
            out[s] = out.get(s, 0.0) + weight * x / (k + rank)
    return out


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete generation files not named by the current manifest, and temp files of interrupted writes."""
    for path in folder.iterdir():
        name = path.name
        if (_GEN_FILE.match(name) and name not in keep) or _TMP_FILE.match(name):
            path.unlink(missing_ok=True)


@contextmanager
def _save_lock(folder: Path) -> Iterator[None]:
    """One saver per folder at a time (an advisory lock on `.lock`; readers never wait)."""
    with open(folder / ".lock", "a+b") as fh:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no cross-process lock
            pass
        yield
