"""Product recommendations: item-item collaborative filtering, TF-IDF content similarity, a hybrid.

All recommenders share one interface: `fit(lines)` on purchase lines (customer_id, sku, optional
description), `recommend(customers, n)` returning the top-n SKUs per customer that the customer has not
bought yet, and `similar_items(sku, n)`. Evaluation (`evaluate_recommenders`) fits before a cut-off and
checks each customer's *new* products after it (hit rate@n, recall@n) against a popularity baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from forecasting.customers._runtime import small_job_threads
from forecasting.customers.transactions import Transactions
from forecasting.errors import InputError

METHODS = ("popular", "itemitem", "content", "hybrid")


class _Base:
    """Shared state: customer and item indices, the customer x item matrix, already-bought masks."""

    def _index(self, lines: pd.DataFrame) -> None:
        if lines.empty:
            raise InputError("no purchase lines to learn recommendations from")
        self.items_ = pd.Index(np.sort(lines["sku"].unique()), name="sku")
        self.customers_ = pd.Index(np.sort(lines["customer_id"].unique()), name="customer_id")
        rows = self.customers_.get_indexer(lines["customer_id"])
        cols = self.items_.get_indexer(lines["sku"])
        pairs = pd.DataFrame({"r": rows, "c": cols}).drop_duplicates()
        data = np.ones(len(pairs), dtype=np.float32)
        shape = (len(self.customers_), len(self.items_))
        self.bought_ = sparse.csr_matrix((data, (pairs["r"], pairs["c"])), shape=shape)
        self.popularity_ = np.asarray(self.bought_.sum(axis=0)).ravel()

    def _rows(self, customers) -> np.ndarray:
        idx = self.customers_.get_indexer(pd.Index(customers).astype(str))
        unknown = [c for c, i in zip(customers, idx, strict=True) if i < 0]
        if unknown:
            raise InputError(f"unknown customer {unknown[0]!r}: no purchases in the data")
        return idx

    def _item(self, sku: str) -> int:
        i = self.items_.get_indexer([str(sku).strip().upper()])[0]
        if i < 0:
            raise InputError(f"unknown SKU {sku!r}: nobody bought it in the data")
        return int(i)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, customers, n: int = 10, batch: int = 1024) -> pd.DataFrame:
        """Top-n unbought SKUs per customer: customer_id, rank (1 = best), sku, score."""
        rows = self._rows(list(customers))
        out = []
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            with small_job_threads():
                scores = np.asarray(self._scores(part), dtype=np.float64)
            # Tiny popularity tie-break so customers with no signal still get sensible items.
            scores = scores + 1e-9 * self.popularity_ / max(self.popularity_.max(), 1)
            scores[self.bought_[part].toarray() > 0] = -np.inf
            k = min(n, scores.shape[1])
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            out.append(
                pd.DataFrame(
                    {
                        "customer_id": np.repeat(self.customers_[part].to_numpy(), k),
                        "rank": np.tile(np.arange(1, k + 1), len(part)),
                        "sku": self.items_[top.ravel()].to_numpy(),
                        "score": top_scores.ravel(),
                    }
                )
            )
        result = pd.concat(out, ignore_index=True)
        return result[np.isfinite(result["score"])].reset_index(drop=True)

    def also_bought(self, sku: str, n: int = 10) -> pd.DataFrame:
        """Co-purchase facts for `sku`: the share of its buyers who also bought each other SKU."""
        i = self._item(sku)
        buyers = self.bought_[:, i].toarray().ravel() > 0
        co = np.asarray(self.bought_[buyers].sum(axis=0), dtype=np.float64).ravel()
        co[i] = 0
        top = np.argsort(-co, kind="stable")[:n]
        return pd.DataFrame(
            {
                "sku": self.items_[top],
                "buyers_both": co[top].astype(int),
                "share_of_buyers": co[top] / max(int(buyers.sum()), 1),
            }
        )


class PopularityRecommender(_Base):
    """Baseline: the most-bought products (by number of customers) that the customer lacks."""

    def fit(self, lines: pd.DataFrame) -> PopularityRecommender:
        self._index(lines)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity_.astype(np.float32), (len(rows), 1))

    def similar_items(self, sku: str, n: int = 10) -> pd.DataFrame:
        out = self.also_bought(sku, n)
        return out.assign(score=out["share_of_buyers"])[["sku", "score"]]


class ItemItemRecommender(_Base):
    """Item-item collaborative filtering on the customer x product purchase matrix X.

    `similarity="ease"` (default) learns the item-item weights by ridge regression of each item's
    buyers on the other items' buyers with a zero diagonal (EASE, Steck 2019): B = I - P / diag(P),
    P = (X'X + l2 I)^-1, one closed-form solve. `similarity="cosine"` uses the cosine of items' buyer
    sets, top-`neighbours` per item. A customer's score for an item is the sum over the items they
    bought of that item's weight towards it.
    """

    def __init__(self, similarity: str = "ease", l2: float = 500.0, neighbours: int = 50):
        self.similarity = similarity
        self.l2 = l2
        self.neighbours = neighbours

    def fit(self, lines: pd.DataFrame) -> ItemItemRecommender:
        self._index(lines)
        X = self.bought_.tocsc()
        gram = (X.T @ X).toarray().astype(np.float64)
        with small_job_threads():
            if self.similarity == "ease":
                self.similarity_ = _ease(gram, self.l2)
            elif self.similarity == "cosine":
                norms = np.sqrt(np.diag(gram))
                sim = (gram / (np.outer(norms, norms) + 1e-12)).astype(np.float32)
                np.fill_diagonal(sim, 0.0)
                self.similarity_ = _keep_top_k(sim, self.neighbours).toarray()
            else:
                raise InputError(f"unknown item similarity {self.similarity!r}: use ease or cosine")
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.bought_[rows] @ self.similarity_)

    def similar_items(self, sku: str, n: int = 10) -> pd.DataFrame:
        return _top_similar(self.similarity_, self.items_, self._item(sku), n)


def _ease(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE item-item weights from the Gram matrix X'X (Cholesky inverse, float32 result)."""
    from scipy.linalg import lapack

    a = np.array(gram, dtype=np.float64, order="F")
    a[np.diag_indices_from(a)] += l2
    chol, info = lapack.dpotrf(a, lower=False, overwrite_a=True)
    if info != 0:
        raise InputError("could not solve the item-item model (matrix not positive definite)")
    inv, info = lapack.dpotri(chol, lower=False, overwrite_c=True)
    upper = np.triu(inv).astype(np.float32)
    del inv, chol, a
    full = upper + np.triu(upper, 1).T
    diag = np.diag(full).copy()
    full /= -diag
    np.fill_diagonal(full, 0.0)
    return full


class ContentRecommender(_Base):
    """Content similarity: TF-IDF of product descriptions (words and word pairs), cosine, top-k kept."""

    def __init__(self, neighbours: int = 100):
        self.neighbours = neighbours

    def fit(self, lines: pd.DataFrame) -> ContentRecommender:
        self._index(lines)
        if "description" not in lines.columns or lines["description"].isna().all():
            raise InputError("content recommendations need product descriptions (a description column)")
        desc = lines[["sku", "description"]].dropna().drop_duplicates("sku").set_index("sku")["description"]
        text = desc.reindex(self.items_).fillna("").astype(str).str.lower()
        self.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        try:
            tfidf = self.vectorizer_.fit_transform(text)
        except ValueError:
            raise InputError("product descriptions have no usable words for content similarity") from None
        sim = (tfidf @ tfidf.T).toarray().astype(np.float32)
        np.fill_diagonal(sim, 0.0)
        self.similarity_ = _keep_top_k(sim, self.neighbours).toarray()
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.bought_[rows] @ self.similarity_)

    def similar_items(self, sku: str, n: int = 10) -> pd.DataFrame:
        return _top_similar(self.similarity_, self.items_, self._item(sku), n)


class HybridRecommender(_Base):
    """Weighted blend of item-item CF and content scores, each scaled to [0, 1] per customer.

    `content_weight` is the content share (0 = pure CF); negative CF scores count as 0. Without
    descriptions it falls back to CF.
    """

    def __init__(self, content_weight: float = 0.1, l2: float = 500.0, neighbours: int = 100):
        self.content_weight = content_weight
        self.l2 = l2
        self.neighbours = neighbours

    def fit(self, lines: pd.DataFrame) -> HybridRecommender:
        self._index(lines)
        self.cf_ = ItemItemRecommender(l2=self.l2).fit(lines)
        has_text = "description" in lines.columns and lines["description"].notna().any()
        self.content_ = ContentRecommender(self.neighbours).fit(lines) if has_text else None
        return self

    @classmethod
    def from_parts(
        cls, cf: ItemItemRecommender, content: ContentRecommender | None, content_weight: float = 0.1
    ) -> HybridRecommender:
        """A hybrid of already-fitted parts (fitted on the same lines), to avoid fitting them twice."""
        model = cls(content_weight=content_weight, l2=cf.l2)
        model.items_, model.customers_ = cf.items_, cf.customers_
        model.bought_, model.popularity_ = cf.bought_, cf.popularity_
        model.cf_, model.content_ = cf, content
        return model

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        cf = _scale_rows(np.clip(self.cf_._scores(rows), 0.0, None))
        if self.content_ is None or self.content_weight <= 0:
            return cf
        content = _scale_rows(self.content_._scores(rows))
        return (1 - self.content_weight) * cf + self.content_weight * content

    def similar_items(self, sku: str, n: int = 10) -> pd.DataFrame:
        i = self._item(sku)
        cf = np.clip(self.cf_.similarity_[i].astype(np.float64), 0.0, None)
        score = (1 - self.content_weight) * cf / max(cf.max(), 1e-12)
        if self.content_ is not None and self.content_weight > 0:
            ct = self.content_.similarity_[i]
            score = score + self.content_weight * ct / max(ct.max(), 1e-12)
        score[i] = -np.inf
        top = np.argsort(-score, kind="stable")[:n]
        return pd.DataFrame({"sku": self.items_[top], "score": score[top]})


def _keep_top_k(sim: np.ndarray, k: int) -> sparse.csr_matrix:
    """Keep each row's k largest positive similarities (sparse), the rest set to zero."""
    k = min(k, sim.shape[1] - 1) if sim.shape[1] > 1 else 1
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(sim, idx, axis=1)
    rows = np.repeat(np.arange(sim.shape[0]), k)
    keep = vals.ravel() > 0
    return sparse.csr_matrix((vals.ravel()[keep], (rows[keep], idx.ravel()[keep])), shape=sim.shape)


def _top_similar(similarity: np.ndarray, items: pd.Index, i: int, n: int) -> pd.DataFrame:
    row = np.asarray(similarity[i], dtype=np.float64).ravel()
    top = np.argsort(-row, kind="stable")[:n]
    top = top[row[top] > 0]
    return pd.DataFrame({"sku": items[top], "score": row[top]})


def _scale_rows(scores: np.ndarray) -> np.ndarray:
    peak = scores.max(axis=1, keepdims=True)
    return scores / np.where(peak > 0, peak, 1.0)


def make_recommender(method: str = "hybrid", **params) -> _Base:
    """Build a recommender by name: popular, itemitem, content or hybrid."""
    classes = {
        "popular": PopularityRecommender,
        "itemitem": ItemItemRecommender,
        "content": ContentRecommender,
        "hybrid": HybridRecommender,
    }
    if method not in classes:
        raise InputError(f"unknown recommendation method {method!r}: use {', '.join(METHODS)}")
    return classes[method](**params)


def evaluate_recommenders(
    tx: Transactions,
    cutoff: pd.Timestamp | str,
    n: int = 10,
    methods: tuple[str, ...] = METHODS,
    end: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Hit rate@n and recall@n on each customer's new products bought in [cutoff, end).

    Test customers bought before and after the cutoff and at least one product after it that they had
    not bought before (and that existed before). One row per method, with `lift_vs_popular`.
    """
    cut = pd.Timestamp(cutoff)
    train = tx.lines[tx.lines["ts"] < cut]
    stop = pd.Timestamp(end) if end is not None else tx.end + pd.Timedelta(days=1)
    test = tx.between(cut, stop)
    if train.empty or test.empty:
        raise InputError(f"need purchases both before and after {cut:%Y-%m-%d} to evaluate recommendations")
    seen = set(zip(train["customer_id"], train["sku"], strict=True))
    known_items = set(train["sku"])
    known_customers = set(train["customer_id"])
    pairs = test[["customer_id", "sku"]].drop_duplicates()
    mask = [
        (c in known_customers) and (s in known_items) and ((c, s) not in seen)
        for c, s in zip(pairs["customer_id"], pairs["sku"], strict=True)
    ]
    relevant = pairs[mask].groupby("customer_id")["sku"].agg(set)
    if relevant.empty:
        raise InputError("no customer bought a new product after the cut-off; nothing to evaluate")
    rows = []
    fitted: dict[str, _Base] = {}
    for method in methods:
        if method == "hybrid" and "itemitem" in fitted and "content" in fitted:
            model = HybridRecommender.from_parts(fitted["itemitem"], fitted["content"])  # type: ignore[arg-type]
        else:
            model = make_recommender(method).fit(train)
        fitted[method] = model
        recs = model.recommend(relevant.index, n=n)
        got = recs.groupby("customer_id")["sku"].agg(set).reindex(relevant.index)
        hits = np.array(
            [len(g & r) if isinstance(g, set) else 0 for g, r in zip(got, relevant, strict=True)], dtype=float
        )
        sizes = relevant.map(len).to_numpy(dtype=float)
        rows.append(
            {
                "method": method,
                f"hit_rate_at_{n}": float((hits > 0).mean()),
                f"recall_at_{n}": float((hits / sizes).mean()),
                f"precision_at_{n}": float((hits / n).mean()),
                "customers": len(relevant),
            }
        )
    out = pd.DataFrame(rows)
    if "popular" in out["method"].values:
        base = out.loc[out["method"] == "popular", f"hit_rate_at_{n}"].iloc[0]
        out["lift_vs_popular"] = out[f"hit_rate_at_{n}"] / base if base > 0 else np.nan
    return out
