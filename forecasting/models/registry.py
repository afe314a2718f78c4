"""Model names the command line accepts, and how each is built."""

from __future__ import annotations

from forecasting.errors import InputError
from forecasting.models.base import Forecaster
from forecasting.models.stats import StatsForecaster

MODEL_NAMES = (*StatsForecaster.METHODS, "lgbm", "lstm")


def make_model(
    name: str, stockout_weight: float = 1.0, seed: int = 42, horizon: int | None = None
) -> Forecaster:
    """A fresh, unfitted point forecaster by name; `horizon` is what the LSTM trains to emit at once."""
    if name in StatsForecaster.METHODS:
        return StatsForecaster(name)
    if name == "lgbm":
        from forecasting.models.lgbm import LGBMForecaster

        return LGBMForecaster(stockout_weight=stockout_weight, seed=seed)
    if name == "lstm":
        from forecasting.models.lstm import LSTMForecaster

        return LSTMForecaster(horizon=horizon, stockout_weight=stockout_weight, seed=seed)
    raise InputError(f"unknown model {name!r}: choose auto or one of {', '.join(MODEL_NAMES)}")
