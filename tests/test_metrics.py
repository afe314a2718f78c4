"""Metrics against values computed by hand, and demand classes on real data."""

import numpy as np
import pandas as pd
import pytest

from forecasting.classify import classify_demand
from forecasting.data import to_long
from forecasting.metrics import series_metrics, wrmsse


def test_metrics_match_hand_computation():
    train = pd.DataFrame(
        {"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=5), "y": [0, 2, 4, 3, 5]}
    )
    # naive diffs from the first non-zero value (2): 2, -1, 2 -> mean abs 5/3, mean sq 3
    fc = pd.DataFrame(
        {
            "unique_id": "a",
            "ds": pd.date_range("2024-01-06", periods=3),
            "y": [4.0, 0.0, 6.0],
            "yhat": [5.0, 1.0, 3.0],
            "yhat_lower": [3.0, 0.0, 4.0],
            "yhat_upper": [6.0, 2.0, 5.0],
        }
    )
    m = series_metrics(fc, train).iloc[0]
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(11 / 3))
    assert m["mape"] == pytest.approx((0.25 + 0.5) / 2 * 100)  # the zero actual is skipped
    assert m["smape"] == pytest.approx((2 / 9 + 2 + 6 / 9) / 3 * 100)
    assert m["bias"] == pytest.approx((1 + 1 - 3) / 3)  # forecast minus actual
    assert m["mase"] == pytest.approx((5 / 3) / (5 / 3))
    assert m["rmsse"] == pytest.approx(np.sqrt((11 / 3) / 3))
    assert m["coverage"] == pytest.approx(2 / 3)
    weights = pd.Series({"a": 10.0})
    assert wrmsse(series_metrics(fc, train), weights).iloc[0] == pytest.approx(m["rmsse"])


def test_demand_classes_on_real_car_parts(carparts_small):
    long, _, _ = to_long(carparts_small, ["part_id"], "month", "sales", [], "MS")
    classes = classify_demand(long)
    assert len(classes) == 60
    nz = long[long["y"] > 0].groupby("unique_id")["y"]
    sizes = long.groupby("unique_id").size()
    adi = sizes / nz.size().reindex(sizes.index)
    cv2 = (nz.std(ddof=0) / nz.mean()) ** 2
    row = classes.set_index("unique_id").loc[adi.dropna().index[0]]
    assert row["adi"] == pytest.approx(adi.dropna().iloc[0])
    assert row["cv2"] == pytest.approx(cv2.fillna(0).loc[adi.dropna().index[0]])
    expected = np.where(
        classes["adi"] < 1.32,
        np.where(classes["cv2"] < 0.49, "smooth", "erratic"),
        np.where(classes["cv2"] < 0.49, "intermittent", "lumpy"),
    )
    assert (classes["demand_class"] == expected).all()
    assert (
        classes["demand_class"].isin(["intermittent", "lumpy"])
    ).mean() > 0.5  # car parts are intermittent
