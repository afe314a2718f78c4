"""Stock-out runs in sales history: zero-sales runs too long for an item's own rate are censored demand.

Sales are demand only while the item is in stock. A run of k periods without sales in an item that
sells most periods is improbable as demand (its chance is about p0^k, p0 the item's share of zero
periods) and is far more likely an outage: the shelf was empty or the item was not delivered. A
forecaster fitted on such a run learns "no demand" (M5's FOODS_2_360 sold nothing for four months in
nine stores, every model forecast 0, and then it sold 3,400 units in the next 28 days); an inventory
policy built on that forecast keeps no stock and loses the demand when supply resumes.

`censored_demand` marks zero runs of at least `min_run_days` with p0^k below alpha / W (alpha shared
over the W periods judged, a Bonferroni bound on flagging a series that had demand all along) as
censored and
gives each series whose recent periods are censored its in-stock demand rate and standard deviation
(the mean and std over its uncensored periods); `unconstrain` raises a forecast path to that rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.paths import ForecastPaths, group_codes


@dataclass
class CensoringSettings:
    """When a zero-sales run counts as a stock-out (see the module docstring). Lengths are in days and
    converted to periods of the data's frequency."""

    alpha: float = 1e-3  # chance of wrongly flagging a series with demand all along, split over its runs
    min_run_days: float = 7.0  # shorter zero runs are never censored
    recent_days: float = 28.0  # a series is adjusted when a censored run touches its last days
    min_in_stock_days: float = 28.0  # and it has this much uncensored history to measure demand on
    window_days: float = 364.0  # history judged (the planner reads this much)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InputError(f"censoring alpha must be between 0 and 1, got {self.alpha}")
        if min(self.min_run_days, self.recent_days, self.min_in_stock_days, self.window_days) <= 0:
            raise InputError("censoring run, recent, in-stock and window days must be positive")

    def periods(self, days: float, period_days: float) -> int:
        return max(int(np.ceil(days / period_days - 1e-9)), 1)


@dataclass
class CensoredDemand:
    """Per series (rows of the history): `flag` (recent periods censored), in-stock `rate` and `sigma`
    per period, `censored_periods` in the window."""

    flag: np.ndarray
    rate: np.ndarray
    sigma: np.ndarray
    censored_periods: np.ndarray


def censored_mask(history: np.ndarray, threshold: float, min_run: int) -> np.ndarray:
    """(n, W) boolean: periods inside a zero run of length k >= min_run with p0^k < threshold."""
    h = np.asarray(history, dtype=float)
    if h.ndim != 2:
        raise InputError("sales history must be a (series, periods) matrix")
    n, w = h.shape
    zero = h <= 0
    p0 = zero.mean(axis=1) if w else np.ones(n)
    edges = np.diff(np.pad(zero, ((0, 0), (1, 1))).astype(np.int8), axis=1)  # (n, w + 1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order pairs each run's start with its end
    length = ends - starts
    with np.errstate(divide="ignore"):
        log_p0 = np.log(p0[rows])
    censored = (length >= min_run) & (p0[rows] < 1) & (length * log_p0 < np.log(threshold))
    marks = np.zeros((n, w + 1), dtype=np.int32)
    np.add.at(marks, (rows[censored], starts[censored]), 1)
    np.add.at(marks, (rows[censored], ends[censored]), -1)
    return np.cumsum(marks, axis=1)[:, :w] > 0


def censored_demand(
    history: np.ndarray, settings: CensoringSettings | None = None, period_days: float = 1.0
) -> CensoredDemand:
    """In-stock demand of every series of `history` (n, periods), most recent period last; only the
    last `window_days` are judged."""
    s = settings or CensoringSettings()
    h = np.asarray(history, dtype=float)
    h = h[:, -s.periods(s.window_days, period_days) :]
    mask = censored_mask(h, s.alpha / max(h.shape[1], 1), s.periods(s.min_run_days, period_days))
    in_stock = ~mask
    count = in_stock.sum(axis=1)
    safe = np.maximum(count, 1)
    rate = np.where(in_stock, h, 0.0).sum(axis=1) / safe
    var = np.where(in_stock, (h - rate[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(count - 1, 1)
    recent = s.periods(s.recent_days, period_days)
    flag = mask[:, -recent:].any(axis=1) & (count >= s.periods(s.min_in_stock_days, period_days))
    return CensoredDemand(flag, np.where(flag, rate, 0.0), np.where(flag, np.sqrt(var), 0.0), mask.sum(1))


def unconstrain(paths: ForecastPaths, demand: CensoredDemand) -> ForecastPaths:
    """Forecast paths whose flagged series get at least their in-stock rate and sigma every period."""
    if len(demand.flag) != len(paths.ids):
        raise InputError("censoring results and forecast have different series")
    f = demand.flag[:, None]
    return ForecastPaths(
        ids=paths.ids,
        start=paths.start,
        mean=np.where(f, np.maximum(paths.mean, demand.rate[:, None]), paths.mean),
        sigma=np.where(f, np.maximum(paths.sigma, demand.sigma[:, None]), paths.sigma),
    )


def history_matrix(history: pd.DataFrame, ids: pd.Index, periods: int) -> np.ndarray:
    """(len(ids), P) sales over the last P = min(`periods`, dates) dates of a long table; absent values 0.

    Dates are the table's own distinct dates (one per period of its frequency); ids without history
    get a row of zeros (never censored).
    """
    missing = [c for c in ("unique_id", "ds", "y") if c not in history.columns]
    if missing:
        raise InputError(f"history is missing column(s): {', '.join(missing)}")
    ds = history["ds"].to_numpy("datetime64[ns]")
    dates = np.sort(pd.unique(ds))
    periods = min(periods, len(dates))
    col = np.searchsorted(dates, ds) - (len(dates) - periods)
    raw_codes, labels = group_codes(history["unique_id"].to_numpy())
    row = ids.get_indexer(labels.astype(str))[raw_codes]
    y = np.nan_to_num(history["y"].to_numpy(float))
    keep = (col >= 0) & (row >= 0)
    flat = row[keep] * periods + col[keep]
    return np.bincount(flat, weights=y[keep], minlength=len(ids) * periods).reshape(len(ids), periods)
