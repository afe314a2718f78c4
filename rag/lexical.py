"""Lexical side of the hybrid index: a tokenizer that keeps product codes whole, and an incremental BM25
inverted index whose scores equal rank-bm25's `BM25Okapi` (same k1, b, epsilon and idf floor).

rank-bm25 scores every document for every query (about a second per query at 100,000 documents), so this
index stores postings column-wise (term -> slots, term frequencies) and scores only the postings of the
query's terms. New documents go to a small append-only delta that is merged into the packed arrays when it
grows; removed documents are masked out at query time and dropped at the next merge.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+(?:[_\-/.][^\W_]+)*")
_SEP = re.compile(r"[_\-/.]")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its me my of on or our per "
    "should so that the their there these this to was we were what when where which who why will with "
    "would you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens for BM25; a code like `FOODS_3_090/CA_1` gives the whole code, its '/' parts
    (`foods_3_090`, `ca_1`) and its atoms (`foods`, `3`, `090`, `ca`, `1`), so both exact and partial
    mentions match. Common English stop words are dropped."""
    out: list[str] = []
    for tok in _WORD.findall(text.lower()):
        if _SEP.search(tok) is None:
            if tok not in STOPWORDS:
                out.append(tok)
            continue
        out.append(tok)
        if "/" in tok:
            out.extend(part for part in tok.split("/") if _SEP.search(part))
        out.extend(a for a in _SEP.split(tok) if a and a not in STOPWORDS)
    return out


CODE_CUES = frozenset("supplier vendor sku item product code store category dept department".split())
"""Words after which the next token names a code whatever its shape ("supplier 2", "store 7")."""


def code_tokens(text: str, keep_case: bool = False) -> list[str]:
    """Tokens of `text` that look like identifiers (SKU, store, supplier codes), whole and their '/' parts.

    A code holds a digit, is not an ISO date, and is at least 2 characters long, or 3 when it is all digits
    (so "14 days" names no supplier 14); right after a cue word ("supplier 2", "store 7") any token with a
    digit counts. Lower-cased unless `keep_case`.
    """
    out: list[str] = []
    prev = ""
    for m in _WORD.finditer(text):
        raw = m.group()
        tok = raw.lower()
        cued = prev in CODE_CUES
        prev = tok
        pairs = (
            zip([tok, *tok.split("/")], [raw, *raw.split("/")], strict=True) if "/" in tok else [(tok, raw)]
        )
        for cand, orig in pairs:
            value = orig if keep_case else cand
            if value not in out and (_looks_like_code(cand) or (cued and any(c.isdigit() for c in cand))):
                out.append(value)
    return out


def _looks_like_code(tok: str) -> bool:
    if not any(c.isdigit() for c in tok) or _DATE.match(tok):
        return False
    flat = _SEP.sub("", tok)
    return len(flat) >= (3 if flat.isdigit() else 2)


def is_text_code(tok: str) -> bool:
    """Whether a mention of `tok` in a document's text counts as naming that code: letters and digits mixed
    (85123A, FOODS_3_090, CA_1), or at least 5 digits (22423); plain numbers like 250 or 2011 do not."""
    if not _looks_like_code(tok):
        return False
    flat = _SEP.sub("", tok)
    return len(flat) >= 5 if flat.isdigit() else True


class BM25Postings:
    """Incremental BM25 (Okapi, as in rank-bm25) over integer document slots.

    The caller owns the slot numbers and the `alive` mask; `add(slot, tokens)` and `remove(slot, tokens)`
    keep document frequencies and lengths exact for the live documents.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, merge_at: int = 100_000):
        self.k1, self.b, self.epsilon, self.merge_at = k1, b, epsilon, merge_at
        self.vocab: dict[str, int] = {}
        self.terms: list[str] = []
        self.indptr = np.zeros(1, dtype=np.int64)  # packed postings, by term id
        self.rows = np.zeros(0, dtype=np.int64)
        self.tf = np.zeros(0, dtype=np.float32)
        self._d_tid: list[int] = []  # delta postings, appended
        self._d_row: list[int] = []
        self._d_tf: list[float] = []
        self._d_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.doc_len = np.zeros(0, dtype=np.float32)  # by slot
        self.df = np.zeros(0, dtype=np.int64)  # by term id, live documents only
        self.n_docs = 0
        self.total_len = 0.0
        self._idf: np.ndarray | None = None
        self._w: np.ndarray | None = None  # cached per-posting BM25 weights (see _packed_weights)
        self._w_key: tuple = ()
        self._merges = 0
        self._removed = 0  # documents removed since the last merge (their postings are still packed)

    # ---------------------------------------------------------------- updates
    def add(self, slot: int, tokens: Sequence[str]) -> None:
        """Index the tokens of a new document in `slot` (slots are never reused)."""
        if slot >= len(self.doc_len):
            grown = np.zeros(max(slot + 1, 2 * len(self.doc_len), 1024), dtype=np.float32)
            grown[: len(self.doc_len)] = self.doc_len
            self.doc_len = grown
        self.doc_len[slot] = len(tokens)
        self.n_docs += 1
        self.total_len += len(tokens)
        counts = Counter(tokens)
        for term, count in counts.items():
            tid = self.vocab.get(term)
            if tid is None:
                tid = self.vocab[term] = len(self.terms)
                self.terms.append(term)
            self._d_tid.append(tid)
            self._d_row.append(slot)
            self._d_tf.append(float(count))
        if len(self.df) < len(self.terms):
            grown_df = np.zeros(max(len(self.terms), 2 * len(self.df), 1024), dtype=np.int64)
            grown_df[: len(self.df)] = self.df
            self.df = grown_df
        self.df[[self.vocab[t] for t in counts]] += 1
        self._d_cache = None
        self._idf = None

    def remove(self, slot: int, tokens: Sequence[str]) -> None:
        """Forget a live document (its postings stay until the next merge; the caller masks the slot)."""
        self.n_docs -= 1
        self._removed += 1
        self.total_len -= float(self.doc_len[slot])
        tids = [self.vocab[t] for t in set(tokens) if t in self.vocab]
        self.df[tids] -= 1
        self._idf = None

    def maybe_merge(self, alive: np.ndarray) -> None:
        """Merge the delta into the packed arrays once it holds `merge_at` postings or a quarter of them."""
        if len(self._d_tid) >= max(self.merge_at, len(self.rows) // 4) or (
            self._d_tid and len(self.rows) == 0 and len(self._d_tid) >= 10_000
        ):
            self.merge(alive)

    def merge(self, alive: np.ndarray) -> None:
        """Pack all live postings (delta included) into term-major arrays; dead slots are dropped."""
        n_terms = len(self.terms)
        b_cols = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr))
        cols = np.concatenate([b_cols, np.asarray(self._d_tid, dtype=np.int64)])
        rows = np.concatenate([self.rows, np.asarray(self._d_row, dtype=np.int64)])
        tf = np.concatenate([self.tf, np.asarray(self._d_tf, dtype=np.float32)])
        keep = alive[rows] if len(rows) else np.zeros(0, dtype=bool)
        cols, rows, tf = cols[keep], rows[keep], tf[keep]
        order = np.lexsort((rows, cols))
        self.rows, self.tf = rows[order], tf[order]
        self.indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=n_terms), out=self.indptr[1:])
        self._d_tid, self._d_row, self._d_tf = [], [], []
        self._d_cache = None
        self._merges += 1
        self._removed = 0

    # ---------------------------------------------------------------- scoring
    def idf(self) -> np.ndarray:
        """rank-bm25's BM25Okapi idf by term id: log((N - df + 0.5) / (df + 0.5)), negatives floored at
        epsilon x the mean idf of the terms present in the live documents."""
        if self._idf is None:
            df = self.df[: len(self.terms)].astype(np.float64)
            idf = np.log(self.n_docs - df + 0.5) - np.log(df + 0.5)
            present = df > 0
            mean = float(idf[present].mean()) if present.any() else 0.0
            idf[idf < 0] = self.epsilon * mean
            self._idf = idf
        return self._idf

    def _weights(self, rows: np.ndarray, tf: np.ndarray) -> np.ndarray:
        """BM25's term-frequency part tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)) per posting."""
        tf = tf.astype(np.float64)
        dl = self.doc_len[rows].astype(np.float64)
        avgdl = self.total_len / self.n_docs
        return tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * dl / avgdl))

    def _packed_weights(self) -> np.ndarray:
        """`_weights` of every packed posting, cached until a document is added or removed (which moves
        the average length) or the delta is merged: one pass over the postings, then each query only
        slices it."""
        key = (self.n_docs, self.total_len, len(self.rows), self._merges)
        if self._w is None or self._w_key != key:
            self._w = self._weights(self.rows, self.tf)
            self._w_key = key
        return self._w

    def postings(self, tid: int, packed: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(slots, term frequencies) of one term, packed and delta together (dead slots included)."""
        rows, tf = self.rows[0:0], self.tf[0:0]
        if packed and tid < len(self.indptr) - 1:
            lo, hi = self.indptr[tid], self.indptr[tid + 1]
            rows, tf = self.rows[lo:hi], self.tf[lo:hi]
        if self._d_tid:
            if self._d_cache is None:
                self._d_cache = (
                    np.asarray(self._d_tid, dtype=np.int64),
                    np.asarray(self._d_row, dtype=np.int64),
                    np.asarray(self._d_tf, dtype=np.float32),
                )
            d_tid, d_row, d_tf = self._d_cache
            sel = d_tid == tid
            if sel.any():
                rows, tf = np.concatenate([rows, d_row[sel]]), np.concatenate([tf, d_tf[sel]])
        return rows, tf

    @property
    def clean(self) -> bool:
        """No postings of removed documents left: a search without filters needs no alive mask."""
        return self._removed == 0

    def score_array(self, tokens: Iterable[str], mask: np.ndarray | None, n: int) -> np.ndarray:
        """BM25 scores by slot (length `n`, 0 for documents holding no query token), only for documents in
        `mask` (bool by slot; None: all, valid when `clean`). A token repeated in the query counts once per
        repeat, as in rank-bm25."""
        out = np.zeros(n)
        qtf = Counter(t for t in tokens if t in self.vocab)
        if not qtf or self.n_docs == 0:
            return out
        idf = self.idf()
        packed_w = self._packed_weights()
        for term, mult in qtf.items():
            tid = self.vocab[term]
            rows, w = self.rows[0:0], packed_w[0:0]
            if tid < len(self.indptr) - 1:
                lo, hi = self.indptr[tid], self.indptr[tid + 1]
                rows, w = self.rows[lo:hi], packed_w[lo:hi]
            if self._d_tid:  # delta postings: weights computed now
                d_rows, d_tf = self.postings(tid, packed=False)
                if len(d_rows):
                    rows, w = np.concatenate([rows, d_rows]), np.concatenate([w, self._weights(d_rows, d_tf)])
            if len(rows) == 0:
                continue
            if mask is not None:
                keep = mask[rows]
                rows, w = rows[keep], w[keep]
            out[rows] += (mult * idf[tid]) * w  # a slot occurs once per term: no repeated indices
        return out

    def scores(self, tokens: Iterable[str], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots, BM25 scores) of the documents in `mask` with a positive score, in slot order."""
        full = self.score_array(tokens, mask, len(self.doc_len))
        slots = np.flatnonzero(full > 0)
        return slots, full[slots]

    @property
    def nbytes(self) -> int:
        return int(
            self.indptr.nbytes
            + self.rows.nbytes
            + self.tf.nbytes
            + self.doc_len.nbytes
            + self.df.nbytes
            + (self._w.nbytes if self._w is not None else 0)
            + 24 * len(self._d_tid)
        )

    # ---------------------------------------------------------------- persistence
    def to_arrays(self, alive: np.ndarray) -> dict[str, np.ndarray]:
        """Packed arrays for saving (merges the delta first)."""
        self.merge(alive)
        terms = "\n".join(self.terms).encode("utf-8")
        return {
            "indptr": self.indptr,
            "rows": self.rows,
            "tf": self.tf,
            "doc_len": self.doc_len,
            "df": self.df[: len(self.terms)],
            "terms": np.frombuffer(terms, dtype=np.uint8),
            "stats": np.array([self.n_docs, self.total_len, self.k1, self.b, self.epsilon], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], merge_at: int = 100_000) -> BM25Postings:
        n_docs, total_len, k1, b, epsilon = arrays["stats"].tolist()
        self = cls(k1=k1, b=b, epsilon=epsilon, merge_at=merge_at)
        raw = arrays["terms"].tobytes().decode("utf-8")
        self.terms = raw.split("\n") if raw else []
        self.vocab = {t: i for i, t in enumerate(self.terms)}
        self.indptr = arrays["indptr"].astype(np.int64)
        self.rows = arrays["rows"].astype(np.int64)
        self.tf = arrays["tf"].astype(np.float32)
        self.doc_len = arrays["doc_len"].astype(np.float32)
        self.df = arrays["df"].astype(np.int64)
        self.n_docs, self.total_len = int(n_docs), float(total_len)
        return self
