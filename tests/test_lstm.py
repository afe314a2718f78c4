"""LSTMForecaster on a small real M5 slice: training, forecasts, intervals, save/load, attention, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from forecasting.data import to_long
from forecasting.errors import InputError
from forecasting.models.base import FORECAST_COLUMNS
from forecasting.models.lstm import LSTMForecaster

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
H = 14
EXOG = ["sell_price", "snap", "event_name_1", "event_type_1", "dept_id", "cat_id", "store_id", "state_id"]
SMALL = dict(
    horizon=H,
    lookback=28,
    hidden_size=16,
    batch_size=64,
    steps_per_epoch=8,
    max_epochs=4,
    patience=10,
    num_threads=1,
)


@pytest.fixture(scope="module")
def m5_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """10 real M5 series (item x store), one year of days; the last H days are the future."""
    raw = pd.read_csv(DATA / "m5" / "m5_sales_long.csv.gz")
    items = sorted(raw["item_id"].unique())[::3][:5]
    d = raw[raw["item_id"].isin(items) & raw["store_id"].isin(["CA_1", "TX_2"])]
    d = d[d["date"] > "2015-03-27"]
    df, _, _ = to_long(d, ["item_id", "store_id"], "date", "value", EXOG, freq="D")
    cutoff = df["ds"].max() - pd.Timedelta(days=H)
    return df[df["ds"] <= cutoff].reset_index(drop=True), df[df["ds"] > cutoff].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(m5_split) -> LSTMForecaster:
    train, _ = m5_split
    return LSTMForecaster(**SMALL, seed=42).fit(train, "D")


@pytest.fixture(scope="module")
def forecast(fitted, m5_split) -> pd.DataFrame:
    _, test = m5_split
    return fitted.predict(H, test.drop(columns="y"))


def test_slice_is_what_the_tests_claim(m5_split):
    train, test = m5_split
    assert train["unique_id"].nunique() == 10
    assert 330 <= train.groupby("unique_id").size().min() <= 366
    assert test.groupby("unique_id").size().eq(H).all()


def test_training_loss_decreases(fitted):
    losses = [h["train_loss"] for h in fitted.history_]
    assert len(losses) == SMALL["max_epochs"]
    assert losses[-1] < losses[0]
    assert all(np.isfinite(h["val_loss"]) for h in fitted.history_)
    assert 1 <= fitted.best_epoch_ <= SMALL["max_epochs"]


def test_forecast_shape_dates_and_non_negative(forecast, m5_split):
    train, _ = m5_split
    assert list(forecast.columns) == FORECAST_COLUMNS
    assert len(forecast) == 10 * H
    assert (forecast["model"] == "lstm").all()
    last = train.groupby("unique_id")["ds"].max()
    for uid, g in forecast.groupby("unique_id"):
        expected = pd.date_range(last[uid] + pd.Timedelta(days=1), periods=H, freq="D")
        assert list(g["ds"]) == list(expected)
    values = forecast[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()


def test_interval_ordering(forecast):
    assert (forecast["yhat_lower"] <= forecast["yhat"]).all()
    assert (forecast["yhat"] <= forecast["yhat_upper"]).all()
    assert (forecast["yhat_upper"] > forecast["yhat_lower"]).mean() > 0.9
    # unit sales are counts, so their 5% / 95% quantiles are whole numbers (unless clipped to yhat)
    for col in ("yhat_lower", "yhat_upper"):
        whole = forecast[col] == forecast[col].round()
        assert (whole | (forecast[col] == forecast["yhat"])).all()


def test_forecast_follows_series_level(forecast, m5_split):
    """A global model must still tell a fast seller from a slow one."""
    train, _ = m5_split
    recent = train[train["ds"] > train["ds"].max() - pd.Timedelta(days=56)].groupby("unique_id")["y"].mean()
    mean_fc = forecast.groupby("unique_id")["yhat"].mean().reindex(recent.index)
    assert np.corrcoef(recent, mean_fc)[0, 1] > 0.8


def test_save_load_round_trip(fitted, forecast, m5_split, tmp_path):
    _, test = m5_split
    folder = fitted.save_pretrained(tmp_path / "lstm")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "context.safetensors",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["params"]["hidden_size"] == SMALL["hidden_size"]
    loaded = LSTMForecaster.from_pretrained(folder)
    again = loaded.predict(H, test.drop(columns="y"))
    pd.testing.assert_frame_equal(again, forecast)


def test_attention_weights_sum_to_one(fitted, forecast, m5_split):
    train, _ = m5_split
    att = fitted.attention_weights()
    assert list(att.columns) == ["unique_id", "ds", "past_ds", "weight"]
    sums = att.groupby(["unique_id", "ds"])["weight"].sum()
    assert len(sums) == len(forecast)
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    last = train.groupby("unique_id")["ds"].max()
    assert (att["past_ds"] <= att["unique_id"].map(last)).all()
    assert (att.groupby(["unique_id", "ds"]).size() == SMALL["lookback"]).all()
    summary = fitted.attention_summary(top_k=3)
    assert list(summary.columns) == ["unique_id", "rank", "past_ds", "weight", "y"]
    assert (summary.groupby("unique_id").size() == 3).all()
    assert (summary.groupby("unique_id")["weight"].apply(lambda w: w.is_monotonic_decreasing)).all()
    uid = forecast["unique_id"].iloc[0]
    one = fitted.attention_weights([uid])
    assert one["unique_id"].eq(uid).all() and one["ds"].nunique() == H


def test_same_seed_same_forecast_other_seed_differs(m5_split, forecast):
    train, test = m5_split
    again = LSTMForecaster(**SMALL, seed=42).fit(train, "D").predict(H, test.drop(columns="y"))
    pd.testing.assert_frame_equal(again, forecast)
    other = LSTMForecaster(**SMALL, seed=7).fit(train, "D").predict(H, test.drop(columns="y"))
    assert not np.allclose(other["yhat"], forecast["yhat"])


def test_torch_state_left_as_found(m5_split):
    train, _ = m5_split
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LSTMForecaster(**{**SMALL, "max_epochs": 1, "num_threads": 1}).fit(train, "D")
    assert torch.equal(torch.rand(3), expected)  # fitting does not consume the caller's random stream
    assert torch.get_num_threads() == threads


def test_horizon_longer_than_trained_runs_on_own_forecasts(fitted, m5_split):
    _, test = m5_split
    fc = fitted.predict(2 * H + 3)
    assert len(fc) == 10 * (2 * H + 3)
    assert (fc["yhat"] >= 0).all() and np.isfinite(fc["yhat"]).all()
    att = fitted.attention_weights()
    np.testing.assert_allclose(att.groupby(["unique_id", "ds"])["weight"].sum(), 1.0, atol=1e-5)


def test_stockout_weight_raises_forecasts(m5_split):
    train, test = m5_split
    X = test.drop(columns="y")
    sym = LSTMForecaster(**SMALL, seed=1).fit(train, "D").predict(H, X)
    asym = LSTMForecaster(**SMALL, seed=1, stockout_weight=3.0).fit(train, "D").predict(H, X)
    assert asym["yhat"].sum() > 1.1 * sym["yhat"].sum()


def test_bad_input_is_an_input_error(fitted, m5_split):
    train, test = m5_split
    with pytest.raises(InputError):
        LSTMForecaster(stockout_weight=0.5).fit(train, "D")
    with pytest.raises(InputError):
        fitted.predict(H, test.drop(columns=["y", "sell_price"]))
    with pytest.raises(InputError):
        LSTMForecaster(**SMALL).fit(train[train["ds"] > train["ds"].max() - pd.Timedelta(days=10)], "D")


def test_monthly_intermittent_car_parts():
    raw = pd.read_csv(DATA / "carparts" / "carparts_long.csv.gz")
    raw = raw[raw["part_id"].isin(sorted(raw["part_id"].unique())[:60])]
    df, _, freq = to_long(raw, ["part_id"], "month", "sales", freq="MS")
    model = LSTMForecaster(hidden_size=16, max_epochs=2, num_threads=1).fit(df, freq)
    assert (model.horizon_, model.lookback_) == (12, 12)
    fc = model.predict(6)
    assert len(fc) == 60 * 6 and (fc["yhat"] >= 0).all()
    assert fc["ds"].min() > df["ds"].max() - pd.DateOffset(months=1)


def test_weekly_with_exogenous(m5_split):
    train, test = m5_split
    both = pd.concat([train, test])
    weekly, _, freq = to_long(both, ["unique_id"], "ds", "y", EXOG, freq="W")
    cut = weekly["ds"].max() - pd.Timedelta(weeks=4)
    model = LSTMForecaster(hidden_size=16, max_epochs=2, num_threads=1).fit(weekly[weekly["ds"] <= cut], freq)
    fc = model.predict(4, weekly[weekly["ds"] > cut].drop(columns="y"))
    assert len(fc) == 10 * 4 and set(fc["ds"]) == set(weekly.loc[weekly["ds"] > cut, "ds"])
