"""Forecast accuracy metrics per series and per model.

Scaled metrics (MASE, RMSSE) divide by the in-sample one-step naive error of the training history
(seasonal naive for MASE when a season is given), counted from the series' first non-zero demand as in
the M5 competition. sMAPE is the 0-200 version; MAPE skips periods with zero actuals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ["mae", "rmse", "mape", "smape", "mase", "rmsse", "bias", "coverage"]


def naive_scales(train: pd.DataFrame, season: int = 1) -> pd.DataFrame:
    """Per series: mean absolute and mean squared (seasonal) naive difference of the training history."""
    rows = []
    for uid, y in train.sort_values(["unique_id", "ds"]).groupby("unique_id", sort=False)["y"]:
        values = y.to_numpy(dtype=float)
        nonzero = np.flatnonzero(values != 0)
        values = values[nonzero[0] :] if len(nonzero) else values
        d1 = np.diff(values)
        ds = values[season:] - values[:-season] if len(values) > season else d1
        rows.append(
            (
                uid,
                np.mean(np.abs(ds)) if len(ds) else np.nan,
                np.mean(d1**2) if len(d1) else np.nan,
            )
        )
    scales = pd.DataFrame(rows, columns=["unique_id", "mae_scale", "mse_scale"])
    # A constant history has zero naive error: fall back to the mean level so scaled errors stay finite.
    level = train.groupby("unique_id")["y"].apply(lambda s: s.abs().mean()).rename("level")
    scales = scales.merge(level, on="unique_id", how="left")
    for col, fallback in (("mae_scale", scales["level"]), ("mse_scale", scales["level"] ** 2)):
        bad = ~(scales[col] > 0)
        scales.loc[bad, col] = fallback[bad]
        scales.loc[~(scales[col] > 0), col] = 1.0
    return scales.drop(columns="level")


def series_metrics(
    fc: pd.DataFrame, train: pd.DataFrame, season: int = 1, pred_col: str = "yhat"
) -> pd.DataFrame:
    """Metrics per series (and per model/cutoff if present) for a frame holding `y` and `pred_col`."""
    keys = [c for c in ("model", "cutoff") if c in fc.columns] + ["unique_id"]
    d = fc.copy()
    d["err"] = d["y"] - d[pred_col]
    d["abs_err"] = d["err"].abs()
    d["sq_err"] = d["err"] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        d["ape"] = np.where(d["y"] != 0, d["abs_err"] / d["y"].abs(), np.nan)
        denom = d["y"].abs() + d[pred_col].abs()
        d["sape"] = np.where(denom > 0, 2 * d["abs_err"] / denom, 0.0)
    has_interval = {"yhat_lower", "yhat_upper"} <= set(d.columns)
    if has_interval:
        d["covered"] = ((d["y"] >= d["yhat_lower"]) & (d["y"] <= d["yhat_upper"])).astype(float)
    agg = d.groupby(keys, sort=False).agg(
        mae=("abs_err", "mean"),
        mse=("sq_err", "mean"),
        mape=("ape", "mean"),
        smape=("sape", "mean"),
        bias=("err", lambda e: -e.mean()),
        n=("y", "size"),
        actual=("y", "sum"),
        **({"coverage": ("covered", "mean")} if has_interval else {}),
    )
    agg = agg.reset_index()
    agg["rmse"] = np.sqrt(agg["mse"])
    agg["mape"] = agg["mape"] * 100
    agg["smape"] = agg["smape"] * 100
    scales = naive_scales(train, season)
    agg = agg.merge(scales, on="unique_id", how="left")
    agg["mase"] = agg["mae"] / agg["mae_scale"]
    agg["rmsse"] = np.sqrt(agg["mse"] / agg["mse_scale"])
    if not has_interval:
        agg["coverage"] = np.nan
    return agg.drop(columns=["mse", "mae_scale", "mse_scale"])


def summarize(per_series: pd.DataFrame) -> pd.DataFrame:
    """One row per model: metrics averaged over series (and cutoffs); MAPE ignores zero-actual series."""
    group = "model" if "model" in per_series.columns else None
    cols = ["mae", "rmse", "mape", "smape", "mase", "rmsse", "bias", "coverage"]
    if group is None:
        return per_series[cols].mean().to_frame().T
    return per_series.groupby(group, sort=False)[cols].mean().reset_index()


def wrmsse(per_series: pd.DataFrame, weights: pd.Series) -> pd.Series:
    """Weighted RMSSE per model: sum of w_i * RMSSE_i, with weights normalised to 1 (M5 level 12)."""
    w = weights / weights.sum()
    d = per_series.merge(w.rename("w"), left_on="unique_id", right_index=True, how="left")
    d["w"] = d["w"].fillna(0.0)
    key = "model" if "model" in d.columns else None
    if key is None:
        return pd.Series({"all": float((d["w"] * d["rmsse"]).sum())})
    d["w_rmsse"] = d["w"] * d["rmsse"]
    return d.groupby(key, sort=False)["w_rmsse"].sum()
