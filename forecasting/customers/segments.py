"""Behavioural customer segments: scaled K-means, k chosen by silhouette, segments named from centroids."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from forecasting.customers._runtime import small_job_threads
from forecasting.customers.rfm import FEATURES, HEAVY_TAILED, log_scale
from forecasting.errors import InputError

# Heavy-tailed features are clustered on log1p scale; shares (0..1) as they are.
LOG_FEATURES = set(HEAVY_TAILED)
# Descriptors added to a base name when two segments would otherwise share it: (feature, sign) -> word.
DESCRIPTORS = {
    ("monetary", 1): "high spend",
    ("monetary", -1): "low spend",
    ("avg_order_value", 1): "big baskets",
    ("avg_order_value", -1): "small baskets",
    ("product_breadth", 1): "broad range",
    ("product_breadth", -1): "narrow range",
    ("return_rate", 1): "frequent returns",
    ("peak_season_share", 1): "peak-season",
    ("peak_season_share", -1): "off-season",
    ("interpurchase_days", 1): "long gaps",
    ("interpurchase_days", -1): "short gaps",
    ("frequency", 1): "frequent",
    ("frequency", -1): "rare",
    ("recency_days", 1): "long gone",
    ("recency_days", -1): "recently active",
}


def base_name(z: pd.Series) -> str:
    """Lifecycle name from a centroid's standardised recency (r), frequency (f) and monetary (m).

    A segment dominated by returns (return rate more than 2 sd above average and its most extreme
    feature) is named for that instead.
    """
    if "return_rate" in z and z["return_rate"] > 2 and z.abs().idxmax() == "return_rate":
        return "Frequent returners"
    r, f, m = z["recency_days"], z["frequency"], z["monetary"]
    if r < -0.3 and f > 0.8 and m > 0.5:
        return "Champions"
    if r < -0.3 and f >= 0:
        return "Loyal regulars"
    if r < -0.3:
        return "Recent newcomers"
    if r > 0.8 and f < 0:
        return "Lapsed"
    if r > 0 and f >= 0:
        return "At risk"
    return "Occasional buyers"


def name_segments(centroid_z: pd.DataFrame) -> list[str]:
    """Unique, readable names for centroids (rows) given in standardised feature units."""
    names = [base_name(row) for _, row in centroid_z.iterrows()]
    for base in set(names):
        idx = [i for i, n in enumerate(names) if n == base]
        if len(idx) < 2:
            continue
        group = centroid_z.iloc[idx]
        spread = group - group.mean()
        used: set[str] = set()
        for pos, i in enumerate(idx):
            order = spread.iloc[pos].abs().sort_values(ascending=False).index
            for feat in order:
                word = DESCRIPTORS.get((feat, int(np.sign(spread.iloc[pos][feat]) or 1)))
                if word and word not in used:
                    used.add(word)
                    names[i] = f"{base} ({word})"
                    break
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n} #{seen[n]}"
    return names


class CustomerSegmenter:
    """K-means on scaled behavioural features, k chosen by silhouette, segments named from centroids.

    Fitted state: `k_`, `silhouette_`, `silhouette_by_k_`, `scaler_`, `kmeans_`, `names_` (per
    segment id), `centroids_` (typical customer per segment, original units), `centroid_z_`
    (standardised), `labels_` (segment id per customer), `segments_` (segment name per customer).
    Segment ids are ordered by centroid spend (0 = highest) or, with `reference`, matched to a previous
    run's standardised centroids, so ids do not permute between runs.
    """

    def __init__(
        self,
        k_range: tuple[int, int] = (3, 8),
        features: list[str] | None = None,
        random_state: int = 0,
        n_init: int = 10,
        silhouette_sample: int = 4000,
    ):
        self.k_range = k_range
        self.features = features
        self.random_state = random_state
        self.n_init = n_init
        self.silhouette_sample = silhouette_sample

    def _matrix(self, feats: pd.DataFrame) -> np.ndarray:
        cols = self.features_
        missing = [c for c in cols if c not in feats.columns]
        if missing:
            raise InputError(f"missing customer feature(s): {', '.join(missing)}")
        X = feats[cols].astype(float).copy()
        logged = [c for c in cols if c in LOG_FEATURES]
        X[logged] = log_scale(X[logged])
        return X.fillna(X.median()).to_numpy()

    def fit(self, feats: pd.DataFrame, reference: pd.DataFrame | None = None) -> CustomerSegmenter:
        """Cluster customers (rows of `feats`, e.g. from `customer_features`)."""
        self.features_ = list(self.features or FEATURES)
        k_min, k_max = self.k_range
        if k_min < 2 or k_max < k_min:
            raise InputError(f"invalid k range {k_min}..{k_max}: need 2 <= k_min <= k_max")
        if len(feats) < k_max + 1:
            raise InputError(f"need more customers than clusters: {len(feats)} customers, k up to {k_max}")
        raw = self._matrix(feats)
        self.scaler_ = StandardScaler().fit(raw)
        X = self.scaler_.transform(raw)
        sample = min(self.silhouette_sample, len(X))
        self.silhouette_by_k_: dict[int, float] = {}
        models: dict[int, KMeans] = {}
        with small_job_threads():
            for k in range(k_min, k_max + 1):
                km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(X)
                models[k] = km
                self.silhouette_by_k_[k] = float(
                    silhouette_score(X, km.labels_, sample_size=sample, random_state=self.random_state)
                )
        self.k_ = max(self.silhouette_by_k_, key=lambda k: (round(self.silhouette_by_k_[k], 6), -k))
        self.silhouette_ = self.silhouette_by_k_[self.k_]
        km = models[self.k_]
        order = self._order(km.cluster_centers_, reference)
        self.kmeans_ = km
        self._perm = np.empty(self.k_, dtype=int)
        self._perm[order] = np.arange(self.k_)
        centers = km.cluster_centers_[order]
        self.centroid_z_ = pd.DataFrame(centers, columns=self.features_)
        self.centroid_z_.index.name = "segment_id"
        self.centroids_ = self._to_original(centers)
        self.names_ = name_segments(self.centroid_z_)
        self.labels_ = pd.Series(self._perm[km.labels_], index=feats.index, name="segment_id")
        self.segments_ = self.labels_.map(dict(enumerate(self.names_))).rename("segment")
        self.sizes_ = self.labels_.value_counts().reindex(range(self.k_), fill_value=0)
        return self

    def _order(self, centers: np.ndarray, reference: pd.DataFrame | None) -> np.ndarray:
        """Cluster index for each segment id: matched to `reference` rows, else by spend (desc)."""
        spend = (
            centers[:, self.features_.index("monetary")] if "monetary" in self.features_ else centers[:, 0]
        )
        default = np.argsort(-spend, kind="stable")
        if reference is None or list(reference.columns) != self.features_ or len(reference) != len(centers):
            return default
        cost = ((reference.to_numpy()[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        rows, cols = linear_sum_assignment(cost)
        return cols[np.argsort(rows)]

    def _to_original(self, centers: np.ndarray) -> pd.DataFrame:
        raw = pd.DataFrame(self.scaler_.inverse_transform(centers), columns=self.features_)
        for c in self.features_:
            if c in LOG_FEATURES:
                raw[c] = np.expm1(raw[c])
        raw.index.name = "segment_id"
        return raw

    def predict(self, feats: pd.DataFrame) -> pd.Series:
        """Segment name for each customer row of `feats`."""
        X = self.scaler_.transform(self._matrix(feats))
        with small_job_threads():
            ids = self._perm[self.kmeans_.predict(X)]
        return pd.Series(np.asarray(self.names_, dtype=object)[ids], index=feats.index, name="segment")

    def summary(self) -> pd.DataFrame:
        """One row per segment: segment_id, name, size, share and the centroid in original units."""
        out = self.centroids_.copy()
        out.insert(0, "share", (self.sizes_ / self.sizes_.sum()).to_numpy())
        out.insert(0, "size", self.sizes_.to_numpy())
        out.insert(0, "name", self.names_)
        return out.reset_index()

    def to_json(self) -> dict:
        """The `customers segments --json` shape: k, silhouette, segments with name, size, centroid."""
        return {
            "k": int(self.k_),
            "silhouette": round(float(self.silhouette_), 4),
            "silhouette_by_k": {str(k): round(v, 4) for k, v in self.silhouette_by_k_.items()},
            "segments": [
                {
                    "id": int(i),
                    "name": self.names_[i],
                    "size": int(self.sizes_.iloc[i]),
                    "centroid": {c: round(float(self.centroids_.iloc[i][c]), 4) for c in self.features_},
                }
                for i in range(self.k_)
            ],
        }
