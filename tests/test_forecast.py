"""The forecast and backtest commands end to end on real slices, and the models behind them."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from forecasting.data import to_long
from forecasting.models.base import FORECAST_COLUMNS
from forecasting.models.lgbm import LGBMForecaster
from forecasting.models.stats import StatsForecaster
from forecasting.store import ResultsStore

runner = CliRunner()
M5_ARGS = ["--id-cols", "item_id,store_id", "--date-col", "date", "--target-col", "value", "--freq", "D"]


def split_future(m5_small: pd.DataFrame, days: int):
    cut = sorted(m5_small["date"].unique())[-days]
    return m5_small[m5_small["date"] < cut], m5_small[m5_small["date"] >= cut].drop(columns=["value"])


def test_forecast_auto_with_future_exogenous(tmp_path, m5_small):
    history, future = split_future(m5_small, 14)
    history.to_csv(tmp_path / "hist.csv", index=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    out = tmp_path / "fc.csv"
    result = runner.invoke(
        app,
        [
            "forecast",
            str(tmp_path / "hist.csv"),
            *M5_ARGS,
            "--exog-cols",
            "sell_price,snap,event_name_1,dept_id",
        ]
        + ["--future", str(tmp_path / "future.csv"), "--horizon", "14", "--output", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    fc = pd.read_csv(out, parse_dates=["ds"])
    assert list(fc.columns) == FORECAST_COLUMNS
    assert len(fc) == 12 * 14 == summary["rows"]
    assert (fc["yhat_lower"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["yhat_upper"]).all()
    assert (fc["yhat_lower"] >= 0).all()
    assert set(fc["ds"].dt.strftime("%Y-%m-%d")) == set(future["date"])
    assert fc["unique_id"].iloc[0].count("/") == 1
    stored = ResultsStore().load("forecasts", run_id=summary["run_id"])
    assert len(stored) == len(fc)


def test_backtest_metrics_table(tmp_path, m5_small):
    path = tmp_path / "m5.parquet"
    m5_small.to_parquet(path)
    out = tmp_path / "metrics.csv"
    result = runner.invoke(
        app,
        ["backtest", str(path), *M5_ARGS, "--horizon", "7", "--windows", "2", "--model", "snaive,ma,sba"]
        + ["--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out)
    assert list(metrics["model"]) == ["snaive", "ma", "sba"]
    for col in ("mae", "rmse", "mape", "smape", "mase", "rmsse", "bias", "coverage", "seconds"):
        assert metrics[col].notna().all(), col
    assert metrics["coverage"].between(0, 1).all()
    assert (metrics["rmse"] >= metrics["mae"]).all()


@pytest.mark.parametrize("method", StatsForecaster.METHODS)
def test_every_statistical_method_forecasts_car_parts(carparts_small, method):
    parts = carparts_small
    if method == "arima":  # AutoARIMA's seasonal search is slow: 8 series are enough to exercise it
        parts = parts[parts["part_id"].isin(sorted(parts["part_id"].unique())[:8])]
    long, _, freq = to_long(parts, ["part_id"], "month", "sales", [], "MS")
    fc = StatsForecaster(method).fit(long, freq).predict(6)
    assert len(fc) == long["unique_id"].nunique() * 6
    assert fc["yhat"].notna().all() and (fc["yhat"] >= 0).all()
    last = long.groupby("unique_id")["ds"].max()
    first_step = fc.groupby("unique_id")["ds"].min()
    assert (first_step == last + pd.offsets.MonthBegin(1)).all()


def test_croston_family_follows_demand_rate(carparts_small):
    long, _, freq = to_long(carparts_small, ["part_id"], "month", "sales", [], "MS")
    croston = StatsForecaster("croston").fit(long, freq).predict(1).set_index("unique_id")["yhat"]
    sba = StatsForecaster("sba").fit(long, freq).predict(1).set_index("unique_id")["yhat"]
    # SBA is Croston times (1 - alpha/2) with alpha = 0.1
    assert (sba / croston).dropna().round(4).eq(0.95).all()


def test_stockout_weight_raises_lgbm_forecasts(m5_small):
    long, _, freq = to_long(m5_small, ["item_id", "store_id"], "date", "value", [], "D")
    plain = LGBMForecaster(n_estimators=60, objective="regression").fit(long, freq).predict(7)
    weighted = LGBMForecaster(n_estimators=60, stockout_weight=3.0).fit(long, freq).predict(7)
    assert weighted["yhat"].sum() > 1.1 * plain["yhat"].sum()


def test_conformal_bounds_have_finite_sample_correction():
    from forecasting.models.auto import _conformal_bounds

    z = pd.Series(range(19))  # 19 scaled errors: (n + 1) * 0.95 = 19 -> the largest one
    lo, hi = _conformal_bounds(z)
    assert lo == 0 and hi == 18
    assert _conformal_bounds(pd.Series(dtype=float)) == (-1.645, 1.645)


def test_auto_defaults_to_the_combination_and_covers_held_out_car_parts(carparts_small):
    from forecasting.models.auto import CLASS_MARGIN, AutoForecaster

    long, _, freq = to_long(carparts_small, ["part_id"], "month", "sales", freq="MS")
    cut = long["ds"].max() - pd.DateOffset(months=6)
    train, test = long[long["ds"] <= cut], long[long["ds"] > cut]
    auto = AutoForecaster(horizon=6, candidates=("ma", "sba", "tsb", "naive"), n_windows=2).fit(train, freq)
    ranked = auto.scores_[["ma", "sba", "tsb", "naive"]].mean().sort_values().index[:3]
    default = "+".join(ranked)
    for _, group in auto.choice_.groupby("demand_class"):
        # a class leaves the default only for a candidate that beat it by the margin on its series
        picks = group["candidate"].value_counts()
        if picks.index[0] != default:
            scores = auto.scores_.loc[group["unique_id"]].mean()
            assert scores[picks.index[0]] < (1 - CLASS_MARGIN) * scores[default]
    fc = auto.predict(6).merge(test, on=["unique_id", "ds"])
    covered = ((fc["y"] >= fc["yhat_lower"]) & (fc["y"] <= fc["yhat_upper"])).mean()
    assert 0.8 <= covered <= 0.99
    assert (auto.residuals_["q_lo"] <= 0).all() and (auto.residuals_["q_hi"] >= 0).all()


def test_single_model_backtest_intervals_match_refitting_each_window(carparts_small):
    """The one-pass backtest gives each window the intervals `--model sba` fitted on that window's
    training data would give (its calibration windows refitted inside)."""
    from forecasting import engine
    from forecasting.backtest import cutoffs

    long, _, freq = to_long(carparts_small, ["part_id"], "month", "sales", freq="MS")
    cv, _ = engine._single_model_cv("sba", long, freq, 6, 2, 1.0, 42)
    for cutoff in cutoffs(long, freq, 6, 2):
        train = long[long["ds"] <= cutoff]
        nested = engine.build("sba", 6).fit(train, freq).predict(6)
        window = cv[cv["cutoff"] == cutoff].merge(nested, on=["unique_id", "ds"], suffixes=("", "_nested"))
        assert len(window) == cv["cutoff"].eq(cutoff).sum() > 0
        for col in ("yhat", "yhat_lower", "yhat_upper"):
            assert window[col].to_numpy() == pytest.approx(window[f"{col}_nested"].to_numpy())


def test_lgbm_trains_on_the_most_recent_rows_of_every_series(m5_small):
    long, _, freq = to_long(m5_small, ["item_id", "store_id"], "date", "value", [], "D")
    model = LGBMForecaster(n_estimators=20, max_train_rows=1200)
    recent = model._recent(long)
    sizes = recent.groupby("unique_id").size()
    assert (sizes == 100).all() and sizes.size == long["unique_id"].nunique()
    assert (recent.groupby("unique_id")["ds"].max() == long.groupby("unique_id")["ds"].max()).all()
    fc = model.fit(long, freq).predict(7)
    assert len(fc) == 7 * sizes.size and (fc["yhat"] >= 0).all()
