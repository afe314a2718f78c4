"""Unusual orders: Isolation Forest on invoice features, top anomalies explained by their oddest features."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from forecasting.customers._runtime import n_jobs
from forecasting.customers.transactions import Transactions
from forecasting.errors import InputError

ORDER_FEATURES = [
    "log_value",
    "log_quantity",
    "log_lines",
    "log_avg_unit_price",
    "hour",
    "value_vs_usual",
    "quantity_vs_usual",
    "lines_vs_usual",
]


def order_features(tx: Transactions) -> pd.DataFrame:
    """One row per purchase invoice with ORDER_FEATURES and readable raw values.

    `*_vs_usual` is the log ratio of the order to the median of the same customer's *other* orders
    (0 for a customer's only order).
    """
    inv = tx.invoices.copy()
    if inv.empty:
        raise InputError("no purchase invoices to score")
    inv["log_value"] = np.log1p(inv["value"])
    inv["log_quantity"] = np.log1p(inv["quantity"])
    inv["log_avg_unit_price"] = np.log(inv["value"] / inv["quantity"])
    inv["hour"] = inv["ts"].dt.hour + inv["ts"].dt.minute / 60.0
    inv["log_lines"] = np.log1p(inv["n_lines"])
    for col, out in (
        ("log_value", "value_vs_usual"),
        ("log_quantity", "quantity_vs_usual"),
        ("log_lines", "lines_vs_usual"),
    ):
        inv[out] = inv[col] - _leave_one_out_median(inv, col)
    return inv


def _leave_one_out_median(inv: pd.DataFrame, col: str) -> pd.Series:
    """Median of `col` over the same customer's other invoices; the value itself when there are none."""
    order = np.lexsort((inv[col].to_numpy(), inv["customer_id"].to_numpy()))
    cust = inv["customer_id"].to_numpy()[order]
    vals = inv[col].to_numpy(dtype=float)[order]
    new_group = np.r_[True, cust[1:] != cust[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(cust)), 0))
    sizes = np.diff(np.r_[np.flatnonzero(new_group), len(cust)])
    n = np.repeat(sizes, sizes)
    i = np.arange(len(cust)) - group_start  # rank of this value within its customer
    rest = n - 1

    def remaining(j: np.ndarray) -> np.ndarray:
        j = np.clip(j, 0, None)
        return vals[np.minimum(group_start + j + (j >= i), len(vals) - 1)]

    odd = rest % 2 == 1
    med = np.where(odd, remaining((rest - 1) // 2), (remaining(rest // 2 - 1) + remaining(rest // 2)) / 2)
    med = np.where(rest == 0, vals, med)
    out = np.empty(len(vals))
    out[order] = med
    return pd.Series(out, index=inv.index)


class OrderAnomalyDetector:
    """Isolation Forest over ORDER_FEATURES. Fitted state: `forest_`, `scores_` (per invoice, higher =
    more unusual), `threshold_` (score at the `contamination` quantile), `center_`, `scale_` (robust
    location and spread of each feature, used to explain anomalies).
    """

    def __init__(self, contamination: float = 0.01, n_estimators: int = 200, random_state: int = 0):
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, tx: Transactions) -> OrderAnomalyDetector:
        if not 0 < self.contamination < 0.5:
            raise InputError(f"contamination must be between 0 and 0.5, got {self.contamination}")
        self.orders_ = order_features(tx)
        if len(self.orders_) < 20:
            raise InputError(f"need at least 20 orders to find unusual ones, got {len(self.orders_)}")
        X = self.orders_[ORDER_FEATURES].to_numpy()
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators,
            contamination=self.contamination,
            random_state=self.random_state,
            n_jobs=n_jobs(),
        ).fit(X)
        self.scores_ = pd.Series(
            -self.forest_.score_samples(X), index=self.orders_.index, name="anomaly_score"
        )
        self.threshold_ = float(np.quantile(self.scores_, 1 - self.contamination))
        feats = self.orders_[ORDER_FEATURES]
        self.center_ = feats.median()
        q75, q25 = feats.quantile(0.75), feats.quantile(0.25)
        self.scale_ = ((q75 - q25) / 1.349).where(lambda s: s > 0, feats.std()).replace(0, 1.0)
        return self

    def top(self, n: int = 20, reasons: int = 3) -> pd.DataFrame:
        """The `n` most unusual orders with their `reasons` most unusual features explained."""
        order = self.scores_.sort_values(ascending=False, kind="stable").index[:n]
        rows = self.orders_.loc[order]
        z = (rows[ORDER_FEATURES] - self.center_) / self.scale_
        out = rows[["invoice", "customer_id", "ts", "value", "quantity", "n_lines"]].copy()
        out["hour"] = rows["ts"].dt.strftime("%H:%M")
        out["anomaly_score"] = self.scores_.loc[order].round(4)
        out["is_anomaly"] = self.scores_.loc[order] >= self.threshold_
        explained = [self._explain(rows.loc[i], z.loc[i], reasons) for i in order]
        out["top_features"] = [[f for f, _ in e] for e in explained]
        out["reasons"] = ["; ".join(text for _, text in e) for e in explained]
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        return out.reset_index(drop=True)

    def _explain(self, row: pd.Series, z: pd.Series, k: int) -> list[tuple[str, str]]:
        picks = z.abs().sort_values(ascending=False, kind="stable").index[:k]
        return [(f, _describe(f, row, float(z[f]))) for f in picks]


def _describe(feature: str, row: pd.Series, z: float) -> str:
    """A short human reading of one feature of an order, with its robust z-score."""
    direction = "high" if z > 0 else "low"
    if feature == "log_value":
        text = f"order value {row['value']:,.2f} ({direction})"
    elif feature == "log_quantity":
        text = f"{row['quantity']:,.0f} units ({direction})"
    elif feature == "log_lines":
        text = f"{int(row['n_lines'])} lines ({direction})"
    elif feature == "log_avg_unit_price":
        text = f"average unit price {row['value'] / row['quantity']:,.2f} ({direction})"
    elif feature == "hour":
        text = f"placed at {row['ts']:%H:%M} (unusual hour)"
    else:
        ratio = float(np.exp(row[feature]))
        what = {"value_vs_usual": "value", "quantity_vs_usual": "units", "lines_vs_usual": "lines"}[feature]
        share = f"{ratio:,.1f}x" if ratio >= 1 else f"{100 * ratio:.1f}% of"
        text = f"{what} {share} this customer's usual order"
    return f"{text}, z={z:+.1f}"
