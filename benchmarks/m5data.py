"""The M5 subset for the benchmarks: loading, the official future calendar and prices, and scoring.

Protocol shared by the foundation and LSTM benchmarks: 280 item x store series, the last 28 days held
out; known-future prices, events and SNAP days come from `calendar.csv` and `sell_prices.csv.gz` (as a
`--future` file would give them), never from the held-out sales rows.

WRMSSE level 12 = sum_i w_i * RMSSE_i with RMSSE_i = sqrt(mean test squared error / mean squared
one-step difference of the training history from the first non-zero sale), w_i = the series' dollar
sales (units * sell_price) over its last 28 training days, normalised to sum to 1.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting.data import to_long  # noqa: E402

M5 = ROOT.parent / "shared" / "data" / "m5"
H = 28
IDS = ["item_id", "store_id"]
STATICS = ["dept_id", "cat_id", "store_id", "state_id"]
DYNAMIC = ["sell_price", "snap", "event_name_1", "event_type_1"]


def load_m5(n_series: int | None = None) -> pd.DataFrame:
    """The M5 subset in long format: unique_id = item_id/store_id, exogenous DYNAMIC + STATICS."""
    raw = pd.read_csv(M5 / "m5_sales_long.csv.gz")
    if n_series:
        keys = raw[IDS].drop_duplicates().sort_values(IDS)
        keep = keys.iloc[np.linspace(0, len(keys) - 1, n_series).round().astype(int)]
        raw = raw.merge(keep, on=IDS)
    df, _, _ = to_long(raw, IDS, "date", "value", DYNAMIC + STATICS, freq="D")
    return df


def split(df: pd.DataFrame, h: int = H) -> tuple[pd.DataFrame, pd.DataFrame]:
    cutoff = df["ds"].max() - pd.Timedelta(days=h)
    return df[df["ds"] <= cutoff].reset_index(drop=True), df[df["ds"] > cutoff].reset_index(drop=True)


def official_future(train: pd.DataFrame, h: int = H) -> pd.DataFrame:
    """Known-future exogenous values for the next `h` days of every series, from the M5 calendar and
    price files: the frame a user passes as `--future`."""
    cal = pd.read_csv(M5 / "calendar.csv", parse_dates=["date"])
    prices = pd.read_csv(M5 / "sell_prices.csv.gz")
    start = train["ds"].max() + pd.Timedelta(days=1)
    days = cal[(cal["date"] >= start) & (cal["date"] < start + pd.Timedelta(days=h))]
    keys = train.groupby("unique_id", sort=False)[STATICS].last().reset_index()
    keys["item_id"] = keys["unique_id"].str.split("/").str[0]
    fut = keys.merge(days, how="cross")
    snap = {s: fut[f"snap_{s}"] for s in ("CA", "TX", "WI")}
    fut["snap"] = np.select([fut["state_id"] == s for s in snap], list(snap.values()), 0)
    fut = fut.merge(prices, on=["store_id", "item_id", "wm_yr_wk"], how="left")
    return fut.rename(columns={"date": "ds"})[["unique_id", "ds", *DYNAMIC, *STATICS]]


def wrmsse(train: pd.DataFrame, test: pd.DataFrame, fc: pd.DataFrame, col: str = "yhat") -> float:
    """Level-12 WRMSSE of forecast column `col` (see the module docstring)."""
    scales, weights = {}, {}
    last = train["ds"].max() - pd.Timedelta(days=H - 1)
    for uid, g in train.groupby("unique_id", sort=False):
        y = g["y"].to_numpy()
        nz = np.flatnonzero(y)
        y = y[nz[0] :] if len(nz) else y
        scales[uid] = np.mean(np.diff(y) ** 2) if len(y) > 1 else np.nan
        recent = g[g["ds"] >= last]
        weights[uid] = float((recent["y"] * recent["sell_price"].fillna(0)).sum())
    m = test[["unique_id", "ds", "y"]].merge(fc[["unique_id", "ds", col]], on=["unique_id", "ds"], how="left")
    if m[col].isna().any():
        raise ValueError(f"forecast misses {int(m[col].isna().sum())} test rows")
    mse = m.assign(se=(m["y"] - m[col]) ** 2).groupby("unique_id")["se"].mean()
    scale = pd.Series(scales).reindex(mse.index)
    w = pd.Series(weights).reindex(mse.index)
    ok = scale > 0
    w = w[ok] / w[ok].sum()
    return float((w * np.sqrt(mse[ok] / scale[ok])).sum())


def coverage(test: pd.DataFrame, fc: pd.DataFrame) -> float:
    """Share of held-out actuals inside the 90% interval."""
    m = test[["unique_id", "ds", "y"]].merge(fc, on=["unique_id", "ds"])
    return float(((m["y"] >= m["yhat_lower"]) & (m["y"] <= m["yhat_upper"])).mean())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


class DefaultLGBM:
    """The peer: a default mlforecast LightGBM (lags 7/14/28, rolling means, date features, the
    exogenous columns as given, categoricals as pandas categories), L2 objective."""

    def __init__(self, threads: int = 2):
        self.threads = threads

    def fit(self, df: pd.DataFrame, freq: str) -> DefaultLGBM:
        import lightgbm as lgb
        from mlforecast import MLForecast
        from mlforecast.lag_transforms import RollingMean

        from forecasting.models.base import static_columns

        self.cats_ = [c for c in df.columns if df[c].dtype == object and c != "unique_id"]
        data = df.copy()
        for c in self.cats_:
            data[c] = data[c].astype("category")
        self.mlf_ = MLForecast(
            models={"lgbm": lgb.LGBMRegressor(n_jobs=self.threads, random_state=42, verbosity=-1)},
            freq=freq,
            lags=[7, 14, 28],
            lag_transforms={7: [RollingMean(7), RollingMean(28)], 28: [RollingMean(28)]},
            date_features=["dayofweek", "month", "day"],
        )
        self.mlf_.fit(data, static_features=static_columns(df))
        self.dtypes_ = data.dtypes
        return self

    def predict(self, h: int, X_df: pd.DataFrame) -> pd.DataFrame:
        X = X_df.copy()
        for c in self.cats_:
            if c in X.columns:
                X[c] = pd.Categorical(X[c], categories=self.dtypes_[c].categories)
        out = self.mlf_.predict(h, X_df=X).rename(columns={"lgbm": "yhat"})
        out["yhat"] = out["yhat"].clip(lower=0)
        return out
