"""Replay a test period period by period: our forecast-driven (s, S) policy against a naive one.

Both policies, every series (x replications), the same rules except how the reorder point is set:
- each period: receive arrivals due, review (inventory position = on hand + on order; no backorders,
  unmet demand is lost), order up to S when the position is at or below s, then demand is served;
- lead times are drawn per (replication, series, order day) from the PO-history distribution (or a
  constant) and shared by both policies (common random numbers), arrivals land at the start of a period;
- order quantity Q: EOQ from the same costs, capped at `max_cover_days` of demand, rounded to pack/MOQ,
  at least one pack; each policy uses its own current demand estimate (the forecast's next T periods
  vs the moving average);
- start: each series at the same random point of its own replenishment cycle, on hand = s + U*Q with
  U ~ Uniform(0, 1) shared by both policies ("cycle"), or at its order-up-to level S ("order_up_to").
Policy ("forecast"): s_t = forecast demand over the next L periods (L = mean lead time) + z *
sqrt(sum of forecast variances over them + d^2 sigma_L^2), recomputed every period from the latest
forecast (one made at the start of the test, or forecasts refreshed during it: see `simulate`).
Series whose recent sales are a stock-out run (zero sales for longer than their own rate makes
plausible, see forecasting/inventory/censoring.py) plan on at least their in-stock demand rate, judged
from the history plus the test periods observed before each forecast issue.
Baseline ("naive"): s_t = 28-day moving average of the observed demand x 30 days of cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.censoring import CensoringSettings, censored_demand, unconstrain
from forecasting.inventory.leadtime import LeadTimeSampler
from forecasting.inventory.paths import ForecastPaths, forecast_paths, period_days, window_sum
from forecasting.inventory.policy import eoq, round_to_pack, z_value

METRICS = (
    "fill_rate",
    "stockout_days",
    "stockout_events",
    "short_days",
    "lost_units",
    "avg_inventory",
    "avg_inventory_value",
    "orders",
    "holding_cost",
    "ordering_cost",
    "stockout_cost",
    "total_cost",
)


@dataclass
class SimulationSettings:
    """Targets and rules of the replay (days are converted to periods of the data's frequency)."""

    service_level: float = 0.95
    naive_window_days: int = 28
    naive_cover_days: float = 30.0
    start: str = "cycle"
    reps: int = 20
    seed: int = 0
    max_cover_days: float = 90.0
    # stock-out runs in the sales known at each forecast issue raise the forecast to the in-stock rate
    # (forecasting.inventory.censoring); None replays the forecasts as they are
    censoring: CensoringSettings | None = field(default_factory=CensoringSettings)

    def __post_init__(self) -> None:
        z_value(self.service_level)
        if self.start not in ("cycle", "order_up_to"):
            raise InputError(f"unknown start rule {self.start!r}: use cycle or order_up_to")
        if self.reps < 1:
            raise InputError("replications must be at least 1")
        if self.naive_window_days < 1 or self.naive_cover_days <= 0:
            raise InputError("the naive policy needs a positive window and cover")


@dataclass
class SimulationResult:
    policy: dict[str, float]
    baseline: dict[str, float]
    change_pct: dict[str, float | None]
    per_series: pd.DataFrame
    settings: dict

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "baseline": self.baseline,
            "change_pct": self.change_pct,
            "settings": self.settings,
        }


def demand_matrices(
    long: pd.DataFrame, test_periods: int, history_periods: int
) -> tuple[pd.Index, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """Split a long table at its last `test_periods` dates: (ids, history (n, history_periods),
    actual test demand (n, test_periods), test dates). Series not covering the window are dropped."""
    dates = np.sort(long["ds"].unique())
    if len(dates) <= test_periods + 1:
        raise InputError(f"need more than {test_periods} periods of history to replay {test_periods} of them")
    grid = long.pivot_table(index="unique_id", columns="ds", values="y", aggfunc="sum")
    grid = grid.reindex(columns=dates)
    test = grid.iloc[:, -test_periods:]
    keep = test.notna().all(axis=1)
    if not keep.any():
        raise InputError("no series has data for every period of the test window")
    grid = grid[keep]
    hist = grid.iloc[:, :-test_periods].iloc[:, -history_periods:].fillna(0.0)
    return (
        grid.index,
        hist.to_numpy(float),
        grid.iloc[:, -test_periods:].to_numpy(float),
        pd.DatetimeIndex(dates[-test_periods:]),
    )


def align_forecast(
    fc: pd.DataFrame, ids: pd.Index, test_dates: pd.DatetimeIndex
) -> tuple[int, ForecastPaths]:
    """A forecast table as (issue period, paths in the row order of `ids`).

    The forecast must cover every series and start on one test date (the day it is used from).
    """
    paths = forecast_paths(fc)
    missing = ids.difference(paths.ids)
    if len(missing):
        raise InputError(f"the forecast has no rows for {len(missing)} series, e.g. {missing[0]!r}")
    rows = paths.ids.get_indexer(ids)
    start = paths.start.iloc[rows]
    if start.nunique() != 1 or start.iloc[0] not in test_dates:
        raise InputError(
            f"a forecast must start on a test date, the same for every series "
            f"(first test date {test_dates[0]:%Y-%m-%d})"
        )
    aligned = ForecastPaths(
        ids=ids, start=pd.Series(start.to_numpy(), index=ids), mean=paths.mean[rows], sigma=paths.sigma[rows]
    )
    return int(test_dates.get_loc(start.iloc[0])), aligned


def simulate(
    actual: np.ndarray,
    history: np.ndarray,
    forecasts: ForecastPaths | list[tuple[int, ForecastPaths]],
    params: pd.DataFrame,
    sampler: LeadTimeSampler,
    freq: str,
    settings: SimulationSettings | None = None,
) -> SimulationResult:
    """Replay `actual` (n, T) under both policies.

    `forecasts`: one forecast starting at the first test period, or (issue period, forecast) pairs for
    forecasts refreshed during the test (issued at the start of that period, before its review); each
    is aligned with the rows of `actual`. `params` (same rows) needs unit_cost, holding_rate, order_cost,
    stockout_cost, pack_size, moq.
    """
    s = settings or SimulationSettings()
    n, T = actual.shape
    issues = sorted(forecasts if isinstance(forecasts, list) else [(0, forecasts)], key=lambda x: x[0])
    if not issues or issues[0][0] != 0:
        raise InputError("the simulation needs a forecast issued at the first test period")
    if any(fc.mean.shape[0] != n for _, fc in issues):
        raise InputError("forecast and test demand have different series")
    paths = issues[0][1]
    if np.any(actual < 0) or np.any(history < 0):
        raise InputError("demand must not be negative in the simulation")
    pdays = period_days(freq)
    per_year = 365.25 / pdays
    R = s.reps
    rng = np.random.default_rng(s.seed)
    lt_draw = np.maximum(np.rint(sampler.sample((R, n, T), rng) / pdays), 1).astype(int)
    u = rng.random((R, n))

    unit_cost = params["unit_cost"].to_numpy(float)
    hold = unit_cost * params["holding_rate"].to_numpy(float)
    k = params["order_cost"].to_numpy(float)
    pack = params["pack_size"].to_numpy(float)
    moq = params["moq"].to_numpy(float)
    cap_periods = s.max_cover_days / pdays

    # policy: forecast-driven reorder points for every review period, from the latest forecast issued
    lbar, lsd = sampler.mean_ / pdays, sampler.std_ / pdays
    z = z_value(s.service_level)
    s_pol, q_pol = np.zeros((n, T)), np.zeros((n, T))
    censored = []
    for k_issue, (issued, fc) in enumerate(issues):
        until = issues[k_issue + 1][0] if k_issue + 1 < len(issues) else T
        if s.censoring is not None:
            known = np.concatenate([history, actual[:, :issued]], axis=1)
            found = censored_demand(known, s.censoring, pdays)
            fc = unconstrain(fc, found)
            censored.append(int(found.flag.sum()))
        cum = fc.cumulative()
        var_cum = np.concatenate([np.zeros((n, 1)), np.cumsum(fc.sigma**2, axis=1)], axis=1)
        tail, tail_var = fc.mean.mean(axis=1), (fc.sigma**2).mean(axis=1)
        lt_n = np.full(n, lbar)
        for t in range(issued, until):
            offset = np.full(n, float(t - issued))
            ltd = window_sum(cum, offset, lt_n, tail)
            var = window_sum(var_cum, offset, lt_n, tail_var)
            s_pol[:, t] = ltd + z * np.sqrt(var + (ltd / lbar) ** 2 * lsd**2)
            rate = window_sum(cum, offset, np.full(n, float(T)), tail) / T
            q_pol[:, t] = _order_quantity(rate, per_year, k, hold, pack, moq, cap_periods)

    # baseline: moving average of observed demand x fixed cover
    w = max(int(round(s.naive_window_days / pdays)), 1)
    if history.shape[1] < w:
        raise InputError(f"the naive policy needs {w} periods of history before the test window")
    seen = np.concatenate([history[:, -w:], actual], axis=1)
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(seen, axis=1)], axis=1)
    ma = (csum[:, w : w + T] - csum[:, 0:T]) / w  # mean of the w periods before each test period
    s_naive = ma * (s.naive_cover_days / pdays)
    q_naive = np.column_stack(
        [_order_quantity(ma[:, t], per_year, k, hold, pack, moq, cap_periods) for t in range(T)]
    )

    pol = _replay(actual, s_pol, q_pol, lt_draw, u, s.start, pack, moq)
    base = _replay(actual, s_naive, q_naive, lt_draw, u, s.start, pack, moq)
    stockout_cost = params["stockout_cost"].to_numpy(float)
    policy = _metrics(pol, actual, unit_cost, hold / per_year, k, stockout_cost)
    baseline = _metrics(base, actual, unit_cost, hold / per_year, k, stockout_cost)
    change = {m: _pct(policy[m], baseline[m]) for m in METRICS}
    per_series = pd.DataFrame(
        {
            "unique_id": paths.ids.to_numpy(),
            "demand": actual.sum(axis=1),
            "policy_fill_rate": _safe_ratio(pol["served"].mean(axis=0).sum(axis=1), actual.sum(axis=1)),
            "baseline_fill_rate": _safe_ratio(base["served"].mean(axis=0).sum(axis=1), actual.sum(axis=1)),
            "policy_stockout_days": (pol["closing"] <= 0).sum(axis=2).mean(axis=0),
            "baseline_stockout_days": (base["closing"] <= 0).sum(axis=2).mean(axis=0),
            "policy_short_days": (actual[None] - pol["served"] > 1e-9).sum(axis=2).mean(axis=0),
            "baseline_short_days": (actual[None] - base["served"] > 1e-9).sum(axis=2).mean(axis=0),
            "policy_avg_inventory": pol["closing"].mean(axis=(0, 2)),
            "baseline_avg_inventory": base["closing"].mean(axis=(0, 2)),
            "policy_reorder_point": s_pol[:, 0],
            "baseline_reorder_point": s_naive[:, 0],
            "policy_order_qty": q_pol[:, 0],
            "baseline_order_qty": q_naive[:, 0],
        }
    )
    info = {
        "series": n,
        "test_periods": T,
        "period_days": pdays,
        "replications": R,
        "service_level": s.service_level,
        "start": s.start,
        "lead_time_mean_days": sampler.mean_,
        "lead_time_std_days": sampler.std_,
        "naive": f"reorder point = {s.naive_window_days}-day moving average x {s.naive_cover_days:g} days",
        "max_cover_days": s.max_cover_days,
        "forecast_issues": [int(p) for p, _ in issues],
        "censored_series": censored,
        "stockout_day": "a series-period closing with no stock on hand",
    }
    return SimulationResult(policy, baseline, change, per_series, info)


def _order_quantity(rate, per_year, k, hold, pack, moq, cap_periods) -> np.ndarray:
    q, _ = eoq(rate * per_year, k, hold)
    q = np.minimum(q, np.maximum(rate * cap_periods, 0.0))
    return np.maximum(round_to_pack(q, pack, moq), np.maximum(pack, 1.0))


def _replay(
    actual: np.ndarray,
    s_level: np.ndarray,
    q: np.ndarray,
    lt: np.ndarray,
    u: np.ndarray,
    start: str,
    pack: np.ndarray,
    moq: np.ndarray,
) -> dict[str, np.ndarray]:
    """Run one policy for all replications at once: `s_level` and `q` are (n, T), results (R, n, T)."""
    R, n, T = lt.shape
    up_to = s_level + q
    first = s_level[None, :, 0] + (u if start == "cycle" else 1.0) * q[None, :, 0]
    on_hand = np.ceil(np.broadcast_to(first, (R, n)) - 1e-9)
    on_order = np.zeros((R, n))
    arrivals = np.zeros((R, n, T + int(lt.max()) + 1))
    closing = np.zeros((R, n, T))
    served = np.zeros((R, n, T))
    orders = np.zeros((R, n, T), dtype=bool)
    r_idx, n_idx = np.meshgrid(np.arange(R), np.arange(n), indexing="ij")
    for t in range(T):
        on_hand += arrivals[:, :, t]
        on_order -= arrivals[:, :, t]
        position = on_hand + on_order
        place = position <= s_level[None, :, t]
        qty = np.where(place, round_to_pack(np.maximum(up_to[None, :, t] - position, 0.0), pack, moq), 0.0)
        place &= qty > 0
        np.add.at(arrivals, (r_idx, n_idx, t + lt[:, :, t]), qty)
        on_order += qty
        orders[:, :, t] = place
        sold = np.minimum(on_hand, actual[None, :, t])
        on_hand -= sold
        served[:, :, t] = sold
        closing[:, :, t] = on_hand
    return {"closing": closing, "served": served, "orders": orders}


def _metrics(run, actual, unit_cost, hold_per_period, order_cost, stockout_cost) -> dict[str, float]:
    """Totals over all series and periods, averaged over replications."""
    closing, served, orders = run["closing"], run["served"], run["orders"]
    R = closing.shape[0]
    demand = actual.sum() * R
    lost = actual[None] - served
    out_of_stock = closing <= 0
    events = out_of_stock[:, :, 0].sum() + (out_of_stock[:, :, 1:] & ~out_of_stock[:, :, :-1]).sum()
    holding = float((closing.sum(axis=2) * hold_per_period[None]).sum()) / R
    ordering = float((orders.sum(axis=2) * order_cost[None]).sum()) / R
    stockout = float((lost.sum(axis=2) * stockout_cost[None]).sum()) / R
    return {
        "fill_rate": float(served.sum() / demand) if demand > 0 else 1.0,
        "stockout_days": float(out_of_stock.sum()) / R,
        "stockout_events": float(events) / R,
        "short_days": float((lost > 1e-9).sum()) / R,
        "lost_units": float(lost.sum()) / R,
        "avg_inventory": float(closing.mean()),
        "avg_inventory_value": float((closing.mean(axis=(0, 2)) * unit_cost).sum()),
        "orders": float(orders.sum()) / R,
        "holding_cost": holding,
        "ordering_cost": ordering,
        "stockout_cost": stockout,
        "total_cost": holding + ordering + stockout,
    }


def _pct(new: float, old: float) -> float | None:
    if old == 0:
        return 0.0 if new == 0 else None
    return 100.0 * (new - old) / old


def _safe_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), 1.0)
