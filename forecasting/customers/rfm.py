"""Per-customer RFM and behavioural features, computed from purchases before a date."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.customers.transactions import Transactions
from forecasting.errors import InputError

# The retailer's peak buying season (months) used for the seasonality feature.
PEAK_MONTHS = (9, 10, 11, 12)

# Counts, amounts and day spans: heavy-tailed, so models see them on a log scale (see log_scale).
HEAVY_TAILED = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "interpurchase_days",
    "product_breadth",
)
FEATURES = [*HEAVY_TAILED, "return_rate", "peak_season_share"]
FEATURE_DOC = {
    "recency_days": "days from the last purchase to the reference date",
    "frequency": "number of purchase invoices",
    "monetary": "total merchandise spend",
    "avg_order_value": "spend per invoice",
    "interpurchase_days": "mean days between purchase days (one-day customers: days since first purchase)",
    "product_breadth": "number of distinct SKUs bought",
    "return_rate": "returned value / (kept + returned value)",
    "peak_season_share": "share of spend in September-December",
}


def log_scale(values):
    """log1p of non-negative feature values (negatives count as 0, NaN stays NaN); arrays or frames."""
    return np.log1p(np.clip(values, 0.0, None))


def customer_features(tx: Transactions, as_of: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """One row per customer who bought before `as_of` (default: the day after the last purchase).

    Columns: FEATURES plus tenure_days, purchase_days, last_purchase, first_purchase,
    orders_last_30d, orders_last_90d, spend_last_90d, country (when known). Index: customer_id.
    """
    ref = pd.Timestamp(as_of) if as_of is not None else tx.end.normalize() + pd.Timedelta(days=1)
    lines = tx.lines[tx.lines["ts"] < ref]
    if lines.empty:
        raise InputError(f"no purchases before {ref:%Y-%m-%d}")
    inv = tx.invoices[tx.invoices["ts"] < ref]
    g = inv.groupby("customer_id", sort=True)
    first, last = g["ts"].min(), g["ts"].max()
    feats = pd.DataFrame(
        {
            "recency_days": (ref - last).dt.total_seconds() / 86400.0,
            "frequency": g.size().astype(float),
            "monetary": g["value"].sum(),
        }
    )
    feats["avg_order_value"] = feats["monetary"] / feats["frequency"]
    days = inv.assign(day=inv["ts"].dt.normalize()).drop_duplicates(["customer_id", "day"])
    n_days = days.groupby("customer_id").size()
    span = (last.dt.normalize() - first.dt.normalize()).dt.days.astype(float)
    tenure = (ref - first).dt.total_seconds() / 86400.0
    gaps = span / (n_days - 1).where(n_days > 1)
    feats["interpurchase_days"] = gaps.fillna(tenure)
    feats["product_breadth"] = (
        lines.groupby("customer_id")["sku"].nunique().reindex(feats.index).astype(float)
    )
    returned = tx.returns[tx.returns["ts"] < ref].groupby("customer_id")["amount"].sum()
    returned = returned.reindex(feats.index).fillna(0.0)
    feats["return_rate"] = (returned / (feats["monetary"] + returned)).clip(0.0, 1.0)
    peak = inv["ts"].dt.month.isin(PEAK_MONTHS)
    peak_spend = inv[peak].groupby("customer_id")["value"].sum().reindex(feats.index).fillna(0.0)
    feats["peak_season_share"] = peak_spend / feats["monetary"]
    feats["tenure_days"] = tenure
    feats["purchase_days"] = n_days.astype(float)
    feats["first_purchase"] = first
    feats["last_purchase"] = last
    for days_back in (30, 90):
        recent = inv[inv["ts"] >= ref - pd.Timedelta(days=days_back)]
        feats[f"orders_last_{days_back}d"] = (
            recent.groupby("customer_id").size().reindex(feats.index).fillna(0)
        )
    recent = inv[inv["ts"] >= ref - pd.Timedelta(days=90)]
    feats["spend_last_90d"] = recent.groupby("customer_id")["value"].sum().reindex(feats.index).fillna(0.0)
    if "country" in lines.columns:
        feats["country"] = lines.groupby("customer_id")["country"].agg("last").reindex(feats.index)
    feats.index.name = "customer_id"
    return feats.replace([np.inf, -np.inf], np.nan)
