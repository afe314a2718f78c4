"""Rolling-origin backtests: refit at each cutoff, forecast the next h periods, compare with actuals."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from forecasting.models.base import Forecaster, exog_columns


def cutoffs(
    df: pd.DataFrame, freq: str, h: int, n_windows: int, step: int | None = None
) -> list[pd.Timestamp]:
    """The last training date of each window, oldest first; the last window ends at the data's end."""
    offset = pd.tseries.frequencies.to_offset(freq)
    end = df["ds"].max()
    step = step or h
    return [end - (h + (n_windows - 1 - i) * step) * offset for i in range(n_windows)]


def cross_validate(
    make_model: Callable[[], Forecaster],
    df: pd.DataFrame,
    freq: str,
    h: int,
    n_windows: int,
    step: int | None = None,
    min_train: int = 2,
    on_window: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, float]:
    """Forecasts of a fresh model at each cutoff, joined to actuals; returns (cv frame, seconds).

    Future exogenous values come from the actuals, as they would from a `--future` file.
    """
    frames = []
    seconds = 0.0
    offset = pd.tseries.frequencies.to_offset(freq)
    exog = exog_columns(df)
    for i, cutoff in enumerate(cutoffs(df, freq, h, n_windows, step)):
        train = df[df["ds"] <= cutoff]
        sizes = train.groupby("unique_id", sort=False).size()
        train = train[train["unique_id"].isin(sizes.index[sizes >= min_train])]
        test = df[(df["ds"] > cutoff) & (df["ds"] <= cutoff + h * offset)]
        test = test[test["unique_id"].isin(train["unique_id"].unique())]
        if train.empty or test.empty:
            continue
        start = time.perf_counter()
        model = make_model().fit(train, freq)
        fc = model.predict(h, test[["unique_id", "ds", *exog]] if exog else None)
        seconds += time.perf_counter() - start
        fc = fc.merge(test[["unique_id", "ds", "y"]], on=["unique_id", "ds"], how="inner")
        fc["cutoff"] = cutoff
        frames.append(fc)
        if on_window:
            on_window(i)
    if not frames:
        return pd.DataFrame(columns=["unique_id", "ds", "cutoff", "y", "yhat", "model"]), seconds
    return pd.concat(frames, ignore_index=True), seconds
