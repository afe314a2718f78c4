"""Segment-aware demand: SKU demand split by customer segment, forecast, and compared with the direct way.

Direct: forecast each SKU's weekly units. Split: forecast each (SKU, segment) series and add the
segment forecasts up per SKU. Both use the project's forecasting engine (`forecasting.engine.forecast`)
with the same model, on units bought by identified customers (lines without a customer id cannot be
given a segment, so they are left out of both). Segments come from features at the cut-off only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.customers.rfm import customer_features
from forecasting.customers.segments import CustomerSegmenter
from forecasting.customers.transactions import Transactions
from forecasting.data import WEEKDAYS, align_dates
from forecasting.errors import InputError


def weekly_demand(lines: pd.DataFrame, freq: str, by: list[str]) -> pd.DataFrame:
    """Long frame (unique_id, ds, y) of units per `by` group and week, zero-filled to the last week."""
    d = lines.assign(ds=align_dates(lines["ts"], freq))
    g = d.groupby([*by, "ds"], sort=True)["quantity"].sum().rename("y").reset_index()
    g["unique_id"] = g[by].astype(str).agg("/".join, axis=1) if len(by) > 1 else g[by[0]].astype(str)
    weeks = pd.date_range(g["ds"].min(), g["ds"].max(), freq=freq)
    grid = pd.MultiIndex.from_product([g["unique_id"].unique(), weeks], names=["unique_id", "ds"])
    out = g.set_index(["unique_id", "ds"])["y"].reindex(grid, fill_value=0.0).reset_index()
    first = out[out["y"] > 0].groupby("unique_id")["ds"].min()
    out = out[out["ds"] >= out["unique_id"].map(first)]
    return out.astype({"y": float}).reset_index(drop=True)


def _engine_forecast(long_df: pd.DataFrame, freq: str, h: int, model: str) -> tuple[pd.DataFrame, str]:
    """Forecast with the project engine (frame or result with `.forecast`); statsforecast if it is absent.

    Returns (unique_id, ds, yhat) and the backend used ("engine" or "statsforecast").
    """
    try:
        from forecasting import engine
    except ImportError:
        return _statsforecast(long_df, freq, h, model), "statsforecast"
    result = engine.forecast(long_df, freq, h, model=model)
    fc = result.forecast if hasattr(result, "forecast") else result
    return fc[["unique_id", "ds", "yhat"]], "engine"


def _statsforecast(long_df: pd.DataFrame, freq: str, h: int, model: str) -> pd.DataFrame:
    """The fallback: TSB for model "tsb", otherwise AutoETS (non-seasonal: under a year of weeks)."""
    from statsforecast import StatsForecast
    from statsforecast.models import TSB, AutoETS

    est = TSB(alpha_d=0.1, alpha_p=0.1, alias="yhat") if model == "tsb" else AutoETS(alias="yhat")
    sf = StatsForecast(models=[est], freq=freq, n_jobs=1)
    fc = sf.forecast(df=long_df[["unique_id", "ds", "y"]], h=h)
    fc = fc.reset_index() if "unique_id" not in fc.columns else fc
    fc["yhat"] = fc["yhat"].clip(lower=0.0)
    return fc[["unique_id", "ds", "yhat"]]


@dataclass
class SegmentDemandComparison:
    """Accuracy of direct vs segment-split SKU forecasts on the holdout weeks."""

    metrics: dict
    per_sku: pd.DataFrame = field(repr=False)
    forecasts: pd.DataFrame = field(repr=False)


def compare_segment_forecasts(
    tx: Transactions,
    cutoff: pd.Timestamp | str,
    n_skus: int = 30,
    model: str = "auto",
    segmenter: CustomerSegmenter | None = None,
) -> SegmentDemandComparison:
    """Fit before `cutoff`, forecast the complete weeks after it both ways, compare with actual units.

    Weeks start on the cut-off's weekday. SKUs: the `n_skus` with most units before the cut-off.
    """
    cut = pd.Timestamp(cutoff).normalize()
    freq = f"W-{WEEKDAYS[cut.weekday()]}"
    last_full = align_dates(pd.Series([tx.end + pd.Timedelta(days=1)]), freq).iloc[0]
    h = int((last_full - cut).days // 7)
    if h < 1:
        raise InputError(f"no complete week of data after {cut:%Y-%m-%d} to evaluate")
    train_lines = tx.lines[tx.lines["ts"] < cut]
    if train_lines.empty:
        raise InputError(f"no purchases before {cut:%Y-%m-%d}")
    skus = train_lines.groupby("sku")["quantity"].sum().nlargest(n_skus).index
    feats = customer_features(tx, cut)
    seg = (segmenter or CustomerSegmenter()).fit(feats)
    lines = tx.lines[tx.lines["sku"].isin(skus) & (tx.lines["ts"] < last_full)]
    lines = lines.assign(segment=lines["customer_id"].map(seg.segments_).fillna("New after cut-off"))
    direct = weekly_demand(lines, freq, ["sku"])
    split = weekly_demand(lines, freq, ["sku", "segment"])
    train_direct, test = direct[direct["ds"] < cut], direct[direct["ds"] >= cut]
    train_split = split[split["ds"] < cut]
    fc_direct, backend = _engine_forecast(train_direct, freq, h, model)
    fc_direct = fc_direct.rename(columns={"yhat": "direct"})
    fc_split, _ = _engine_forecast(train_split, freq, h, model)
    fc_split["sku"] = fc_split["unique_id"].str.split("/", n=1).str[0]
    fc_split = fc_split.groupby(["sku", "ds"], as_index=False)["yhat"].sum().rename(columns={"yhat": "split"})
    fc_split = fc_split.rename(columns={"sku": "unique_id"})
    both = test.merge(fc_direct, on=["unique_id", "ds"], how="left").merge(
        fc_split, on=["unique_id", "ds"], how="left"
    )
    both[["direct", "split"]] = both[["direct", "split"]].fillna(0.0)
    per_sku = both.groupby("unique_id").apply(_errors, include_groups=False).reset_index()
    metrics = {
        "cutoff": f"{cut:%Y-%m-%d}",
        "freq": freq,
        "horizon_weeks": h,
        "skus": int(len(skus)),
        "segments": list(seg.names_),
        "k": int(seg.k_),
        "model": model,
        "backend": backend,
        "split_series": int(train_split["unique_id"].nunique()),
    }
    for way in ("direct", "split"):
        err = both[way] - both["y"]
        metrics[f"wape_{way}"] = float(err.abs().sum() / both["y"].abs().sum())
        metrics[f"mae_{way}"] = float(err.abs().mean())
        metrics[f"bias_{way}"] = float(err.sum() / both["y"].sum())
    metrics["wape_change"] = metrics["wape_split"] - metrics["wape_direct"]
    metrics["skus_better_split"] = int((per_sku["wape_split"] < per_sku["wape_direct"]).sum())
    return SegmentDemandComparison(metrics, per_sku, both)


def _errors(g: pd.DataFrame) -> pd.Series:
    total = max(float(g["y"].abs().sum()), 1e-9)
    return pd.Series(
        {
            "units": float(g["y"].sum()),
            "wape_direct": float(np.abs(g["direct"] - g["y"]).sum() / total),
            "wape_split": float(np.abs(g["split"] - g["y"]).sum() / total),
        }
    )
