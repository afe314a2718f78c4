"""Statistical and intermittent-demand baselines through statsforecast (one model per instance)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from forecasting.models.base import Forecaster

SEASON = {"D": 7, "W": 52, "MS": 12}
WINDOW = {"D": 28, "W": 8, "MS": 6}
# ETS and ARIMA fit on the most recent history only: enough seasons to estimate, far faster on long series.
MAX_HISTORY = {"D": 364, "W": 156, "MS": 72}


def season_length(freq: str) -> int:
    return SEASON.get("W" if freq.startswith("W") else freq, 1)


def default_window(freq: str) -> int:
    return WINDOW.get("W" if freq.startswith("W") else freq, 4)


def _statsforecast_model(method: str, season: int, window: int):
    from statsforecast import models as m

    factories = {
        "naive": lambda: m.Naive(alias="y_hat"),
        "snaive": lambda: m.SeasonalNaive(season_length=season, alias="y_hat"),
        "ma": lambda: m.WindowAverage(window_size=window, alias="y_hat"),
        # Additive errors: multiplicative ones are undefined for zero-demand periods, and on strictly
        # positive series they triple the model search for little gain in the mean forecast.
        "ets": lambda: m.AutoETS(season_length=season, model="AZZ", alias="y_hat"),
        "arima": lambda: m.AutoARIMA(season_length=season, alias="y_hat"),
        "croston": lambda: m.CrostonClassic(alias="y_hat"),
        "sba": lambda: m.CrostonSBA(alias="y_hat"),
        "tsb": lambda: m.TSB(alpha_d=0.1, alpha_p=0.1, alias="y_hat"),
    }
    return factories[method]()


class StatsForecaster(Forecaster):
    """One univariate method for every series: naive, snaive, ma, ma_nonzero, ets, arima, croston,
    sba or tsb. Exogenous columns are ignored. Series too short for the seasonal or windowed form fall
    back to the mean of their last `window` periods, so every series gets a forecast."""

    METHODS = ("naive", "snaive", "ma", "ma_nonzero", "ets", "arima", "croston", "sba", "tsb")

    def __init__(self, method: str, season_length: int | None = None, window: int | None = None):
        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}")
        self.method = method
        self.season_length = season_length
        self.window = window
        self.name = method

    def fit(self, df: pd.DataFrame, freq: str) -> StatsForecaster:
        self.train_ = df[["unique_id", "ds", "y"]].sort_values(["unique_id", "ds"]).reset_index(drop=True)
        self.freq_ = freq
        self.season_ = self.season_length or season_length(freq)
        self.window_ = self.window or default_window(freq)
        return self

    def predict(self, h: int, X_df: pd.DataFrame | None = None) -> pd.DataFrame:
        if self.method == "ma_nonzero":
            level = self._nonzero_average()
        else:
            level = None
        future = future_dates(self.train_, self.freq_, h)
        if level is not None:
            out = future.merge(level.rename("yhat"), left_on="unique_id", right_index=True, how="left")
        else:
            out = self._statsforecast(h, future)
        missing = out["yhat"].isna()
        if missing.any():
            fallback = self.train_.groupby("unique_id")["y"].apply(lambda s: s.tail(self.window_).mean())
            out.loc[missing, "yhat"] = out.loc[missing, "unique_id"].map(fallback)
        out["yhat"] = out["yhat"].clip(lower=0.0)
        out["model"] = self.name
        return out

    def _statsforecast(self, h: int, future: pd.DataFrame) -> pd.DataFrame:
        from statsforecast import StatsForecast

        season = self.season_
        sizes = self.train_.groupby("unique_id", sort=False).size()
        needs = {"snaive": season, "ets": 2 * season + 2, "arima": 2 * season + 2}.get(self.method, 1)
        long_enough = sizes.index[sizes >= max(needs, 2)]
        train = self.train_[self.train_["unique_id"].isin(long_enough)]
        if self.method in ("ets", "arima"):
            keep = MAX_HISTORY.get("W" if self.freq_.startswith("W") else self.freq_, 156)
            train = train.groupby("unique_id", sort=False).tail(keep)
        frames = []
        if len(train):
            sf = StatsForecast(
                models=[_statsforecast_model(self.method, season, self.window_)],
                freq=self.freq_,
                n_jobs=_n_jobs(len(long_enough)),
            )
            fc = sf.forecast(df=train, h=h)
            frames.append(fc.rename(columns={"y_hat": "yhat"})[["unique_id", "ds", "yhat"]])
        out = future.merge(
            pd.concat(frames) if frames else pd.DataFrame(columns=["unique_id", "ds", "yhat"]),
            on=["unique_id", "ds"],
            how="left",
        )
        out["yhat"] = out["yhat"].astype(float)
        return out

    def _nonzero_average(self) -> pd.Series:
        """Mean of the last `window` non-zero demands times the share of periods they span that had demand."""
        rates = {}
        for uid, y in self.train_.groupby("unique_id", sort=False)["y"]:
            values = y.to_numpy(dtype=float)
            nz = np.flatnonzero(values > 0)
            if len(nz) == 0:
                rates[uid] = 0.0
                continue
            last = nz[-self.window_ :]
            span = len(values) - last[0]
            rates[uid] = values[last].sum() / span
        return pd.Series(rates)


def future_dates(train: pd.DataFrame, freq: str, h: int) -> pd.DataFrame:
    """The next `h` dates after each series' last date."""
    last = train.groupby("unique_id", sort=False)["ds"].max()
    offset = pd.tseries.frequencies.to_offset(freq)
    base = pd.DatetimeIndex(last.to_numpy())
    ds = np.column_stack([(base + k * offset).to_numpy() for k in range(1, h + 1)]).ravel()
    return pd.DataFrame({"unique_id": np.repeat(last.index.to_numpy(), h), "ds": ds})


def _n_jobs(n_series: int) -> int:
    from forecasting.settings import get_settings

    threads = get_settings().threads or os.cpu_count() or 1
    return 1 if n_series < 200 else threads
