"""Entry points the command line, API and benchmarks share: forecast and backtest a long frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from forecasting.backtest import cross_validate, cutoffs
from forecasting.errors import InputError
from forecasting.metrics import series_metrics, summarize
from forecasting.models.auto import LARGE_ROWS, AutoForecaster, calibration_windows
from forecasting.models.registry import MODEL_NAMES, make_model
from forecasting.models.stats import season_length

AUTO_CANDIDATES = ("snaive", "ma", "ets", "sba", "tsb", "lgbm", "lstm")
# The LSTM joins `auto` when a global network has enough to learn from and its training fits the time
# budget: at least LSTM_MIN_SERIES series whose typical history holds two lookback windows plus the
# backtest horizons, and at most LSTM_MAX_ROWS rows (beyond that, ask for `--model lstm` explicitly).
LSTM_MIN_SERIES = 20
LSTM_MAX_ROWS = LARGE_ROWS
ATTENTION_TOP_K = 5


@dataclass
class ForecastResult:
    """The forecast table, the fitted model, and for series the LSTM helped forecast, the past periods
    its attention weighed most (`unique_id, rank, past_ds, weight, y`), or None."""

    forecast: pd.DataFrame
    model: AutoForecaster
    notes: list[str] = field(default_factory=list)
    attention: pd.DataFrame | None = None


def auto_candidates(df: pd.DataFrame, freq: str, h: int) -> tuple[str, ...]:
    """The candidates `auto` backtests on `df` (the LSTM only where it fits, see LSTM_MAX_ROWS)."""
    from forecasting.models.lstm import DEFAULT_LOOKBACK, freq_key

    lengths = df.groupby("unique_id", sort=False).size()
    use_lstm = (
        len(lengths) >= LSTM_MIN_SERIES
        and len(df) <= LSTM_MAX_ROWS
        and lengths.median() >= 2 * DEFAULT_LOOKBACK[freq_key(freq)] + 2 * h
    )
    return tuple(c for c in AUTO_CANDIDATES if c != "lstm" or use_lstm)


def resolve_models(spec: str) -> list[str]:
    """'auto', one model name, or a comma-separated list of names."""
    names = [s.strip() for s in spec.split(",") if s.strip()] or ["auto"]
    unknown = [n for n in names if n != "auto" and n not in MODEL_NAMES]
    if unknown:
        raise InputError(f"unknown model {unknown[0]!r}: choose auto or one of {', '.join(MODEL_NAMES)}")
    return names


def build(
    model: str,
    horizon: int,
    stockout_weight: float = 1.0,
    seed: int = 42,
    n_windows: int | None = None,
    progress=None,
    candidates: tuple[str, ...] = AUTO_CANDIDATES,
) -> AutoForecaster:
    """`auto` selects among `candidates`; a single name is that model with conformal intervals."""
    candidates = candidates if model == "auto" else (model,)
    return AutoForecaster(
        horizon=horizon,
        candidates=candidates,
        n_windows=n_windows,
        stockout_weight=stockout_weight,
        seed=seed,
        progress=progress,
    )


def forecast(
    df: pd.DataFrame,
    freq: str,
    h: int,
    model: str = "auto",
    X_df: pd.DataFrame | None = None,
    stockout_weight: float = 1.0,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> ForecastResult:
    """Fit `model` on all of `df` and forecast `h` periods with 90% intervals (forecast table)."""
    forecaster = build(
        model, h, stockout_weight, seed, progress=progress, candidates=auto_candidates(df, freq, h)
    )
    fc = forecaster.fit(df, freq).predict(h, X_df)
    return ForecastResult(forecast=fc, model=forecaster, attention=_attention(forecaster, fc))


def _attention(forecaster: AutoForecaster, fc: pd.DataFrame) -> pd.DataFrame | None:
    """Top attention periods of the LSTM for the series whose chosen method includes it."""
    lstm = forecaster.models_.get("lstm")
    if lstm is None:
        return None
    uses = fc.loc[fc["model"].str.split("+").map(lambda parts: "lstm" in parts), "unique_id"].unique()
    summary = lstm.attention_summary(top_k=ATTENTION_TOP_K)
    return summary[summary["unique_id"].isin(uses)].reset_index(drop=True)


def backtest(
    df: pd.DataFrame,
    freq: str,
    h: int,
    windows: int,
    models: list[str],
    stockout_weight: float = 1.0,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rolling-origin backtest of each model: (metrics one row per model, per-series metrics)."""
    rows, per_series = [], []
    for name in models:
        if progress:
            progress(f"backtesting {name}")
        if name == "auto":
            cv, seconds = cross_validate(
                lambda: build("auto", h, stockout_weight, seed, candidates=auto_candidates(df, freq, h)),
                df,
                freq,
                h,
                windows,
                min_train=2,
            )
        else:
            cv, seconds = _single_model_cv(name, df, freq, h, windows, stockout_weight, seed)
        if cv.empty:
            raise InputError(f"not enough history for {windows} windows of {h} periods")
        cv["model"] = name
        ps = series_metrics(cv, df[df["ds"] <= cv["cutoff"].min()], season_length(freq))
        per_series.append(ps)
        summary = summarize(ps).iloc[0].to_dict()
        rows.append({"model": name, **{k: v for k, v in summary.items() if k != "model"}, "seconds": seconds})
    return pd.DataFrame(rows), pd.concat(per_series, ignore_index=True)


def _single_model_cv(
    name: str, df: pd.DataFrame, freq: str, h: int, windows: int, stockout_weight: float, seed: int
) -> tuple[pd.DataFrame, float]:
    """Backtest forecasts of one model with the 90% intervals `--model NAME` would give at each cutoff.

    Those intervals calibrate on the model's errors in the windows just before the cutoff, the ones
    `AutoForecaster.fit` would backtest inside that window's training data. Running the windows
    once, oldest first, and calibrating each on its predecessors gives the same numbers with one fit per
    cutoff instead of refitting every calibration window inside every backtest window.
    """
    first = cutoffs(df, freq, h, windows)[0]
    most = calibration_windows(df[df["ds"] <= first])  # the smallest training set needs the most
    cuts = cutoffs(df, freq, h, windows + most)
    cv, seconds = cross_validate(
        lambda: make_model(name, stockout_weight, seed, h), df, freq, h, windows + most, min_train=2
    )
    frames = []
    for i in range(most, len(cuts)):
        window = cv[cv["cutoff"] == cuts[i]]
        if window.empty:
            continue
        train = df[df["ds"] <= cuts[i]]
        n_cal = calibration_windows(train)
        cal = cv[cv["cutoff"].isin(cuts[i - n_cal : i])]
        auto = AutoForecaster(h, (name,), n_windows=n_cal).calibrate(train, freq, {name: cal})
        out = auto.with_intervals(window[["unique_id", "ds", "yhat", "model"]])
        frames.append(out.assign(y=window["y"].to_numpy(), cutoff=cuts[i]))
    if not frames:
        return cv.iloc[0:0], seconds
    return pd.concat(frames, ignore_index=True), seconds
