"""Forecast tables as SKU x period matrices, and sums / first-passage times along demand paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.policy import sigma_from_interval

PERIOD_DAYS = {"D": 1.0, "W": 7.0, "MS": 365.25 / 12.0}
FORECAST_NEEDS = ("unique_id", "ds", "yhat", "yhat_lower", "yhat_upper")


def period_days(freq: str) -> float:
    """Length of one period in days for a pandas alias from forecasting.data.pandas_freq."""
    key = "W" if freq.startswith("W") else freq
    if key not in PERIOD_DAYS:
        raise InputError(f"unsupported frequency {freq!r} for inventory numbers: use D, W or MS")
    return PERIOD_DAYS[key]


@dataclass
class ForecastPaths:
    """Per-SKU forecast paths: `mean` and `sigma` are (n_sku, horizon) arrays in demand per period."""

    ids: pd.Index
    start: pd.Series  # first forecast date per SKU
    mean: np.ndarray
    sigma: np.ndarray

    @property
    def horizon(self) -> int:
        return self.mean.shape[1]

    def cumulative(self) -> np.ndarray:
        """(n, horizon + 1) cumulative mean demand, starting at 0."""
        return np.concatenate([np.zeros((len(self.ids), 1)), np.cumsum(self.mean, axis=1)], axis=1)


def forecast_paths(fc: pd.DataFrame, level: float = 0.90) -> ForecastPaths:
    """Validate a forecast table (the contract) and turn it into matrices.

    Sigma per period is the `sigma` column when present (e.g. backtest residual std), else the width of
    the `level` interval / (2 z). Series with fewer periods than the longest are padded with their mean.
    """
    missing = [c for c in FORECAST_NEEDS if c not in fc.columns]
    if missing:
        raise InputError(f"forecast table is missing column(s): {', '.join(missing)}")
    if fc.empty:
        raise InputError("forecast table has no rows")
    cols = [*FORECAST_NEEDS, *(["sigma"] if "sigma" in fc.columns else [])]
    ds = pd.to_datetime(fc["ds"], errors="coerce")
    if ds.isna().any():
        raise InputError("forecast table has empty or unparseable dates")
    values = {}
    for col in cols[2:]:
        v = pd.to_numeric(fc[col], errors="coerce").to_numpy(float)
        if np.isnan(v).any():
            uid = fc["unique_id"].to_numpy()[np.isnan(v)][0]
            raise InputError(f"forecast table column {col!r} has missing values (e.g. series {uid!r})")
        values[col] = v
    if (values["yhat"] < 0).any():
        raise InputError("forecast table has negative yhat values: demand forecasts must be >= 0")
    if "sigma" in values:
        sigma = values["sigma"]
    else:
        sigma = sigma_from_interval(values["yhat_lower"], values["yhat_upper"], level)
    if np.any(sigma < 0):
        raise InputError("forecast table has negative sigma values")
    raw_codes, labels = group_codes(fc["unique_id"].astype(str))
    ids = labels.sort_values()
    codes = ids.get_indexer(labels)[raw_codes]
    day = ds.to_numpy("datetime64[ns]")
    order = np.lexsort((day, codes))
    codes, day = codes[order], day[order]
    if np.any((codes[1:] == codes[:-1]) & (day[1:] == day[:-1])):
        raise InputError("forecast table has duplicate (unique_id, ds) rows")
    n = len(ids)
    counts = np.bincount(codes, minlength=n)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(codes)) - first[codes]
    h = int(counts.max())
    mean = np.full((n, h), np.nan)
    sd = np.full((n, h), np.nan)
    mean[codes, pos] = values["yhat"][order]
    sd[codes, pos] = sigma[order]
    if np.isnan(mean).any():
        mean = np.where(np.isnan(mean), np.nanmean(mean, axis=1, keepdims=True), mean)
        sd = np.where(np.isnan(sd), np.sqrt(np.nanmean(sd**2, axis=1, keepdims=True)), sd)
    start = pd.Series(day[first], index=pd.Index(ids, name="unique_id"))
    return ForecastPaths(ids=pd.Index(ids, name="unique_id"), start=start, mean=mean, sigma=sd)


def with_residual_sigma(
    fc: pd.DataFrame, residuals: pd.DataFrame, lead_periods: float | None = None, level: float = 0.90
) -> pd.DataFrame:
    """Add a `sigma` column (per period) to a forecast table from backtest errors.

    `residuals` has unique_id, y, yhat (e.g. cross-validation output, or past forecasts against what
    was sold). Without `lead_periods`: each series' standard deviation of its errors. With it (and a
    `ds` column; windows told apart by `cutoff` when present): the root mean square of the errors
    summed over every run of `lead_periods` consecutive periods, divided by sqrt(lead_periods), so
    that sqrt(L) * sigma is the observed lead-time forecast error, bias and error autocorrelation
    included. Series with too few errors keep the interval-implied sigma.
    """
    missing = [c for c in ("unique_id", "y", "yhat") if c not in residuals.columns]
    if missing:
        raise InputError(f"residual table is missing column(s): {', '.join(missing)}")
    err = pd.to_numeric(residuals["y"], errors="coerce") - pd.to_numeric(residuals["yhat"], errors="coerce")
    if err.isna().any():
        raise InputError("residual table has empty or non-numeric y / yhat values")
    uid = residuals["unique_id"].astype(str).to_numpy()
    if lead_periods is None:
        g = err.groupby(uid)
        sd = g.std().where(g.size() >= 2)
    else:
        if "ds" not in residuals.columns:
            raise InputError("residual table needs a ds column for lead-time errors")
        span = max(int(round(lead_periods)), 1)
        window = residuals["cutoff"].astype(str).to_numpy() if "cutoff" in residuals.columns else ""
        frame = pd.DataFrame(
            {"uid": uid, "w": window, "ds": pd.to_datetime(residuals["ds"]), "e": err.to_numpy()}
        )
        frame = frame.sort_values(["uid", "w", "ds"])
        sums = frame.groupby(["uid", "w"], sort=False)["e"].rolling(span, min_periods=span).sum().dropna()
        rms = (sums**2).groupby(level=0).mean() ** 0.5
        sd = rms.where(sums.groupby(level=0).size() >= 2) / np.sqrt(span)
    out = fc.copy()
    fallback = sigma_from_interval(out["yhat_lower"], out["yhat_upper"], level)
    out["sigma"] = out["unique_id"].astype(str).map(sd).fillna(pd.Series(fallback, index=out.index))
    return out


def group_codes(values: pd.Series | np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and unique labels of `values` (labels in first-seen order).

    Tables in long format are usually sorted by id, so runs of equal labels are found by comparing
    neighbours (much faster than hashing millions of strings); otherwise falls back to factorize.
    """
    arr = np.asarray(values, dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64), pd.Index([])
    starts = np.flatnonzero(np.concatenate([[True], arr[1:] != arr[:-1]]))
    labels = pd.Index(arr[starts])
    if labels.is_unique:
        codes = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(arr))))
        return codes, labels
    codes, uniques = pd.factorize(arr)
    return codes, pd.Index(uniques)


def cum_at(cum: np.ndarray, x: np.ndarray, tail_rate: np.ndarray) -> np.ndarray:
    """Cumulative value at fractional period `x` (per row), linear inside a period, `tail_rate` beyond."""
    n, width = cum.shape
    h = width - 1
    x = np.maximum(np.asarray(x, dtype=float), 0.0)
    k = np.minimum(np.floor(x).astype(int), h)
    rows = np.arange(n)
    inside = cum[rows, k] + (cum[rows, np.minimum(k + 1, h)] - cum[rows, k]) * (x - k)
    beyond = cum[:, h] + (x - h) * tail_rate
    return np.where(x <= h, inside, beyond)


def window_sum(cum: np.ndarray, start: np.ndarray, length: np.ndarray, tail_rate: np.ndarray) -> np.ndarray:
    """Sum over periods [start, start + length) along each row (fractional ends interpolated)."""
    start = np.asarray(start, dtype=float)
    return cum_at(cum, start + length, tail_rate) - cum_at(cum, start, tail_rate)


def first_passage(cum: np.ndarray, target: np.ndarray, tail_rate: np.ndarray, cap: float) -> np.ndarray:
    """Periods until cumulative demand reaches `target` (0 if target <= 0), at most `cap`."""
    n, width = cum.shape
    h = width - 1
    target = np.asarray(target, dtype=float)
    k = np.clip((cum < target[:, None]).sum(axis=1), 1, h)  # first index with cum >= target
    rows = np.arange(n)
    lo, hi = cum[rows, k - 1], cum[rows, k]
    step = hi - lo
    inside = (k - 1) + np.where(step > 0, (target - lo) / np.where(step > 0, step, 1.0), 0.0)
    rate = np.where(tail_rate > 0, tail_rate, 1.0)
    beyond = np.where(tail_rate > 0, h + (target - cum[:, h]) / rate, np.inf)
    out = np.where(target <= 0, 0.0, np.where(target <= cum[:, h], inside, beyond))
    return np.minimum(out, cap)
