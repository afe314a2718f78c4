"""ABC classes (revenue Pareto 80/15/5, or k-means clustering), XYZ classes (demand variability), and
service-level targets per ABC class."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.paths import group_codes

ABC_CUTS = (0.80, 0.95)  # cumulative revenue share closing classes A and B (80/15/5)
XYZ_CUTS = (0.5, 1.0)  # coefficient of variation closing classes X and Y
CLASS_SERVICE_LEVELS = {"A": 0.98, "B": 0.95, "C": 0.90}  # default cycle service level per ABC class


def abc_pareto(revenue: pd.Series, cuts: tuple[float, float] = ABC_CUTS) -> pd.Series:
    """A for the SKUs making the first 80% of revenue, B the next 15%, C the rest.

    A SKU belongs to the class in which its cumulative share starts, so the top SKU is always A.
    """
    rev = _revenue(revenue)
    total = rev.sum()
    if total <= 0:
        return pd.Series("C", index=rev.index, name="abc")
    order = rev.sort_values(ascending=False, kind="stable")
    before = (order.cumsum() - order) / total
    labels = np.where(before < cuts[0], "A", np.where(before < cuts[1], "B", "C"))
    labels = np.where(order.to_numpy() <= 0, "C", labels)
    return pd.Series(labels, index=order.index, name="abc").reindex(rev.index)


def abc_kmeans(revenue: pd.Series, n_init: int = 10, seed: int = 0) -> pd.Series:
    """ABC by k-means (k=3) on log revenue: the cluster with the highest centre is A, then B, then C."""
    from sklearn.cluster import KMeans

    rev = _revenue(revenue)
    x = np.log1p(rev.to_numpy()).reshape(-1, 1)
    if len(np.unique(x)) < 3:
        return abc_pareto(rev)
    km = KMeans(n_clusters=3, n_init=n_init, random_state=seed).fit(x)
    rank = np.argsort(-km.cluster_centers_.ravel())
    names = np.empty(3, dtype=object)
    names[rank] = ["A", "B", "C"]
    return pd.Series(names[km.labels_], index=rev.index, name="abc").astype(str)


def abc_classes(revenue: pd.Series, method: str = "pareto") -> pd.Series:
    if method == "pareto":
        return abc_pareto(revenue)
    if method == "kmeans":
        return abc_kmeans(revenue)
    raise InputError(f"unknown ABC method {method!r}: use pareto or kmeans")


def _revenue(revenue: pd.Series) -> pd.Series:
    rev = pd.to_numeric(revenue, errors="coerce").astype(float)
    if rev.isna().any() or (rev < 0).any():
        raise InputError("revenue for ABC classes must be non-negative numbers")
    if rev.empty:
        raise InputError("no SKUs to classify")
    return rev


def demand_stats(history: pd.DataFrame, ids: pd.Index, period_days: float, days: int = 365) -> pd.DataFrame:
    """Per SKU over its last `days` days of history: `annual_units` (demand per year) and `cv`, the
    coefficient of variation of demand per bucket (std / mean; no demand -> inf).

    Daily data is bucketed into full Monday-Sunday weeks (daily CVs of retail items are almost all
    above 1); other frequencies use their own periods. SKUs without history get NaN annual units.
    Expects the long format (one row per series and period, as forecasting.data.to_long makes it).
    """
    n = len(ids)
    day = history["ds"].to_numpy("datetime64[D]").astype(np.int64)
    uid, y = history["unique_id"].to_numpy(), history["y"].to_numpy(float)
    recent = day > day.max() - days
    if not recent.all():
        day, uid, y = day[recent], uid[recent], y[recent]
    raw_codes, labels = group_codes(uid)
    codes = ids.get_indexer(labels.astype(str))[raw_codes]
    keep = codes >= 0
    if not keep.all():
        codes, day, y = codes[keep], day[keep], y[keep]
    out = pd.DataFrame({"annual_units": np.nan, "cv": np.inf}, index=ids)
    if not len(codes):
        return out
    periods = np.bincount(codes, minlength=n)  # long format: one row per period (gaps filled)
    units = np.bincount(codes, weights=y, minlength=n)
    seen = periods > 0
    out.loc[seen, "annual_units"] = units[seen] / periods[seen] * (365.25 / period_days)
    if period_days == 1.0:
        bucket = (day + 3) // 7  # 1970-01-01 was a Thursday: Monday-start weeks
        full_size = 7
    else:
        bucket = np.unique(day, return_inverse=True)[1]
        full_size = 1
    bucket = bucket - bucket.min()
    width = int(bucket.max()) + 1
    key = codes * width + bucket
    sums = np.bincount(key, weights=y, minlength=n * width).reshape(n, width)
    counts = np.bincount(key, minlength=n * width).reshape(n, width)
    full = counts >= full_size
    full = np.where(full.any(axis=1, keepdims=True), full, counts > 0)
    m = full.sum(axis=1)
    mean = np.where(m > 0, (sums * full).sum(axis=1) / np.maximum(m, 1), 0.0)
    var = np.where(m > 0, (full * (sums - mean[:, None]) ** 2).sum(axis=1) / np.maximum(m, 1), 0.0)
    has = m > 0
    cv = np.where(mean > 0, np.sqrt(var) / np.where(mean > 0, mean, 1.0), np.inf)
    out.loc[has, "cv"] = cv[has]
    return out


def xyz_classes(cv: pd.Series, cuts: tuple[float, float] = XYZ_CUTS) -> pd.Series:
    """X: steady (CV <= 0.5), Y: variable (<= 1.0), Z: erratic (above, or no demand)."""
    v = cv.to_numpy(dtype=float)
    return pd.Series(
        np.where(v <= cuts[0], "X", np.where(v <= cuts[1], "Y", "Z")), index=cv.index, name="xyz"
    )


def parse_class_levels(text: str | None) -> dict[str, float]:
    """'A=0.98,B=0.95,C=0.9' -> {'A': 0.98, ...}; classes not given keep their defaults."""
    levels = dict(CLASS_SERVICE_LEVELS)
    if not text:
        return levels
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip().upper()
        if key not in levels:
            raise InputError(f"class service levels: unknown class {key!r} (use A, B, C)")
        try:
            level = float(value)
        except ValueError:
            raise InputError(f"class service levels: {part.strip()!r} is not CLASS=LEVEL") from None
        if not 0 < level < 1:
            raise InputError(f"class service levels: {key} must be between 0 and 1, got {value.strip()}")
        levels[key] = level
    return levels


def service_levels(abc: pd.Series, levels: dict[str, float] | None = None) -> pd.Series:
    """Cycle service-level target of each SKU from its ABC class."""
    levels = levels or CLASS_SERVICE_LEVELS
    return abc.map(levels).astype(float).rename("service_level")
