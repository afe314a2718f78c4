"""The one interface every forecaster implements (scikit-learn habits, Nixtla long format)."""

from __future__ import annotations

import pandas as pd

FORECAST_COLUMNS = ["unique_id", "ds", "yhat", "yhat_lower", "yhat_upper", "model"]
LEVEL = 90  # every forecaster emits a 90% interval


class Forecaster:
    """Fit on a long frame, predict `h` steps with a 90% interval.

    `fit(df, freq)`: `df` has `unique_id, ds, y` and optional exogenous columns; columns that are
    constant within every series are static features, the others are dynamic and must be given
    for the future in `predict(h, X_df)`. `predict` returns `FORECAST_COLUMNS`, non-negative.
    """

    name = "base"

    def fit(self, df: pd.DataFrame, freq: str) -> Forecaster:
        raise NotImplementedError

    def predict(self, h: int, X_df: pd.DataFrame | None = None) -> pd.DataFrame:
        raise NotImplementedError


def exog_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ("unique_id", "ds", "y")]


def static_columns(df: pd.DataFrame) -> list[str]:
    """Exogenous columns whose value never changes within a series (store, category, ...)."""
    cols = exog_columns(df)
    if not cols:
        return []
    nunique = df.groupby("unique_id", sort=False)[cols].nunique(dropna=False)
    return [c for c in cols if (nunique[c] <= 1).all()]


def finish(fc: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """Clip to non-negative, order the interval, return the contract columns; `model` labels all rows."""
    out = fc.copy()
    for col in ("yhat", "yhat_lower", "yhat_upper"):
        out[col] = out[col].astype(float).clip(lower=0.0)
    out["yhat_lower"] = out[["yhat_lower", "yhat"]].min(axis=1)
    out["yhat_upper"] = out[["yhat_upper", "yhat"]].max(axis=1)
    if model:
        out["model"] = model
    out["unique_id"] = out["unique_id"].astype(str)
    return out[FORECAST_COLUMNS].reset_index(drop=True)
