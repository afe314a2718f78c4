"""LightGBM global model over all series (mlforecast): lags, rolling means, calendar and exogenous
features, tweedie objective, and an optional stockout weighting of under-forecasts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.models.base import Forecaster, exog_columns, static_columns


def _week(dates: pd.DatetimeIndex) -> np.ndarray:
    return dates.isocalendar().week.to_numpy().astype(int)


def feature_plan(freq: str) -> dict:
    """Lags, lag transforms and date features suited to the data's frequency."""
    from mlforecast.lag_transforms import ExpandingMean, RollingMean, RollingStd

    if freq == "D":
        return {
            "lags": [1, 2, 3, 4, 5, 6, 7, 14, 21, 28],
            "lag_transforms": {
                1: [RollingMean(7), RollingMean(28), RollingStd(28), ExpandingMean()],
                7: [RollingMean(7), RollingMean(28)],
                28: [RollingMean(28), RollingMean(84)],
            },
            "date_features": ["dayofweek", "month", "day", "dayofyear"],
        }
    if freq.startswith("W"):
        return {
            "lags": [1, 2, 3, 4, 8, 13, 26, 52],
            "lag_transforms": {
                1: [RollingMean(4), RollingMean(13), RollingStd(13), ExpandingMean()],
                4: [RollingMean(4), RollingMean(13)],
            },
            "date_features": ["month", _week],
        }
    return {
        "lags": [1, 2, 3, 6, 12],
        "lag_transforms": {1: [RollingMean(3), RollingMean(6), RollingMean(12), ExpandingMean()]},
        "date_features": ["month"],
    }


@contextmanager
def _quiet_nulls() -> Iterator[None]:
    """Silence mlforecast's notice about missing feature values: LightGBM handles them by design
    (early lags of short series, events on ordinary days), so users need not see it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found null values", category=UserWarning)
        yield


def asymmetric_l2(stockout_weight: float):
    """Squared error where under-forecasts (actual above forecast) weigh `stockout_weight` times more."""

    def objective(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.where(y_true > y_pred, stockout_weight, 1.0)
        return 2.0 * w * (y_pred - y_true), 2.0 * w

    return objective


class LGBMForecaster(Forecaster):
    """One LightGBM model for all series, recursive over the horizon.

    Static exogenous columns (constant within a series, e.g. store or category) become static features;
    dynamic ones (price, promotion, events) are features whose future values `predict` needs in `X_df`.
    Text columns are encoded as LightGBM categoricals. Numeric dynamic columns also enter relative to
    their series' training mean (a price cut shows as price_rel < 1 whatever the item's price level).
    `stockout_weight` k > 1 switches to an asymmetric squared error that weighs under-forecasts k times.
    Training uses at most `max_train_rows` rows, the most recent periods of every series (equal
    length for all): boosting time grows with rows, and the oldest years add little for the next weeks.
    """

    name = "lgbm"

    def __init__(
        self,
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 63,
        min_child_samples: int = 20,
        objective: str = "tweedie",
        tweedie_variance_power: float = 1.1,
        stockout_weight: float = 1.0,
        seed: int = 42,
        num_threads: int | None = None,
        max_train_rows: int | None = 400_000,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.objective = objective
        self.tweedie_variance_power = tweedie_variance_power
        self.stockout_weight = stockout_weight
        self.seed = seed
        self.num_threads = num_threads
        self.max_train_rows = max_train_rows

    def _regressor(self):
        import lightgbm as lgb

        params = dict(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=self.seed,
            n_jobs=self._threads(),
            verbosity=-1,
            deterministic=True,
            force_row_wise=True,
        )
        if self.stockout_weight != 1.0:
            return lgb.LGBMRegressor(objective=asymmetric_l2(self.stockout_weight), **params)
        if self.objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return lgb.LGBMRegressor(objective=self.objective, **params)

    def _threads(self) -> int:
        from forecasting.settings import get_settings

        return self.num_threads or get_settings().threads or os.cpu_count() or 1

    def fit(self, df: pd.DataFrame, freq: str) -> LGBMForecaster:
        from mlforecast import MLForecast

        self.freq_ = freq
        self.static_ = static_columns(df)
        self.dynamic_ = [c for c in exog_columns(df) if c not in self.static_]
        self.categories_ = {
            c: sorted(df[c].dropna().astype(str).unique())
            for c in exog_columns(df)
            if not pd.api.types.is_numeric_dtype(df[c])
        }
        self.rel_cols_ = [c for c in self.dynamic_ if c not in self.categories_]
        self.means_ = df.groupby("unique_id")[self.rel_cols_].mean() if self.rel_cols_ else None
        train = self._features(self._recent(df))
        plan = feature_plan("W" if freq.startswith("W") else freq)
        self.mlf_ = MLForecast(
            models={"lgbm": self._regressor()},
            freq=freq,
            lags=plan["lags"],
            lag_transforms=plan["lag_transforms"],
            date_features=plan["date_features"],
            num_threads=1,
        )
        keep = max(plan["lags"]) + 84
        with _quiet_nulls():
            self.mlf_.fit(train, static_features=self.static_, dropna=False, keep_last_n=keep)
        self.last_dates_ = df.groupby("unique_id")["ds"].max()
        self.last_values_ = df.sort_values("ds").groupby("unique_id")[self.dynamic_].last()
        return self

    def _recent(self, df: pd.DataFrame) -> pd.DataFrame:
        """The last `max_train_rows / n_series` periods of every series (all of `df` when it fits)."""
        if not self.max_train_rows or len(df) <= self.max_train_rows:
            return df
        per_series = -(-self.max_train_rows // df["unique_id"].nunique())
        return df.sort_values(["unique_id", "ds"]).groupby("unique_id", sort=False).tail(per_series)

    def _features(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for col, cats in self.categories_.items():
            if col not in out.columns:
                continue
            out[col] = pd.Categorical(out[col].astype("string").where(out[col].notna()), categories=cats)
        for col in self.rel_cols_:
            mean = out["unique_id"].map(self.means_[col])
            out[f"{col}_rel"] = (out[col] / mean.replace(0, np.nan)).astype(float)
        return out

    def _future_exog(self, h: int, X_df: pd.DataFrame | None) -> pd.DataFrame | None:
        """Future dynamic features for every series and step; gaps carry the last known value forward."""
        if not self.dynamic_:
            return None
        offset = pd.tseries.frequencies.to_offset(self.freq_)
        base = pd.DatetimeIndex(self.last_dates_.to_numpy())
        grid = pd.DataFrame(
            {
                "unique_id": np.repeat(self.last_dates_.index.to_numpy(), h),
                "ds": np.column_stack([(base + k * offset).to_numpy() for k in range(1, h + 1)]).ravel(),
            }
        )
        if X_df is not None:
            missing = [c for c in self.dynamic_ if c not in X_df.columns]
            if missing:
                raise InputError(f"future values lack exogenous column(s): {', '.join(missing)}")
            grid = grid.merge(X_df[["unique_id", "ds", *self.dynamic_]], on=["unique_id", "ds"], how="left")
        else:
            for col in self.dynamic_:
                grid[col] = np.nan
        for col in self.dynamic_:
            last = grid["unique_id"].map(self.last_values_[col])
            grid[col] = grid.groupby("unique_id")[col].ffill().fillna(last)
        feats = self._features(grid)
        return feats[["unique_id", "ds", *self.dynamic_, *[f"{c}_rel" for c in self.rel_cols_]]]

    def predict(self, h: int, X_df: pd.DataFrame | None = None) -> pd.DataFrame:
        with _quiet_nulls():
            fc = self.mlf_.predict(h, X_df=self._future_exog(h, X_df))
        out = fc.rename(columns={"lgbm": "yhat"})[["unique_id", "ds", "yhat"]]
        out["yhat"] = out["yhat"].clip(lower=0.0)
        out["model"] = self.name
        return out
