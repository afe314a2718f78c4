"""Inventory numbers: textbook formulas, lead times from real POs, ABC/XYZ and order advice on real M5
series, the policy simulation, and the CLI (JSON shapes, results store, one-line errors)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

from api.cli import app
from forecasting.data import to_long
from forecasting.errors import InputError
from forecasting.inventory.censoring import CensoringSettings, censored_demand, censored_mask
from forecasting.inventory.classes import (
    abc_kmeans,
    abc_pareto,
    demand_stats,
    parse_class_levels,
    xyz_classes,
)
from forecasting.inventory.inputs import InventoryDefaults, read_open_orders, read_params, resolve_params
from forecasting.inventory.leadtime import LeadTimeSampler, lead_time_stats, open_orders, po_lead_times
from forecasting.inventory.paths import forecast_paths, with_residual_sigma
from forecasting.inventory.policy import (
    eoq,
    newsvendor,
    normal_loss,
    round_to_pack,
    safety_stock_csl,
    safety_stock_fill_rate,
    z_value,
)
from forecasting.inventory.recommend import InventoryPlanner, PolicySettings
from forecasting.inventory.simulate import (
    SimulationSettings,
    _replay,
    align_forecast,
    demand_matrices,
    simulate,
)
from forecasting.store import ResultsStore

runner = CliRunner()
M5_ARGS = ["--id-cols", "item_id,store_id", "--date-col", "date", "--target-col", "value", "--freq", "D"]


def profile_forecast(long: pd.DataFrame, start: pd.Timestamp, h: int) -> pd.DataFrame:
    """A real, simple forecast: each series' weekday means over the 8 weeks before `start`, with a 90%
    interval from the spread of those weeks around the means (the forecast-table contract)."""
    recent = long[(long["ds"] < start) & (long["ds"] >= start - pd.Timedelta(days=56))]
    recent = recent.assign(wd=recent["ds"].dt.weekday)
    prof = recent.groupby(["unique_id", "wd"])["y"].mean()
    resid = (
        recent["y"].to_numpy()
        - prof.reindex(pd.MultiIndex.from_frame(recent[["unique_id", "wd"]])).to_numpy()
    )
    sd = pd.Series(resid).groupby(recent["unique_id"].to_numpy()).std().fillna(0.0)
    dates = pd.date_range(start, periods=h, freq="D")
    grid = pd.MultiIndex.from_product(
        [sorted(recent["unique_id"].unique()), dates], names=["unique_id", "ds"]
    )
    fc = grid.to_frame(index=False)
    fc["yhat"] = prof.reindex(pd.MultiIndex.from_arrays([fc["unique_id"], fc["ds"].dt.weekday])).to_numpy()
    half = norm.ppf(0.95) * fc["unique_id"].map(sd).to_numpy()
    fc["yhat_lower"] = np.maximum(fc["yhat"] - half, 0.0)
    fc["yhat_upper"] = fc["yhat"] + half
    fc["model"] = "weekday_profile"
    return fc


@pytest.fixture(scope="module")
def m5_long(m5_small) -> pd.DataFrame:
    long, _, _ = to_long(m5_small, ["item_id", "store_id"], "date", "value", ["sell_price"], "D")
    return long


@pytest.fixture(scope="module")
def bibitor_lt(data_dir) -> pd.DataFrame:
    return po_lead_times(pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv"))


# ---- textbook formulas -------------------------------------------------------------------------


def test_eoq_textbook_example():
    q, cost = eoq(1300, 8, 0.225)
    assert round(float(q), 2) == 304.05
    assert round(float(cost), 2) == 68.41


def test_newsvendor_textbook_example():
    level, cost = newsvendor(50, 8, 0.18, 0.70)
    assert round(float(level), 2) == 56.60
    assert round(float(cost), 2) == 2.00


def test_safety_stock_includes_lead_time_variability():
    z = norm.ppf(0.95)
    # d = 100/day, sigma_d = 20, L = 9 days, sigma_L = 2 days
    assert safety_stock_csl(0.95, 100, 20, 9, 2) == pytest.approx(z * np.sqrt(9 * 400 + 100**2 * 4))
    assert safety_stock_csl(0.95, 100, 20, 9, 0) == pytest.approx(z * 20 * 3)
    levels = safety_stock_csl(np.array([0.9, 0.95, 0.99]), 100, 20, 9, 2)
    assert np.all(np.diff(levels) > 0)


def test_fill_rate_safety_stock_meets_its_target_in_simulation():
    q, sigma, target = 100.0, 50.0, 0.98
    ss = float(safety_stock_fill_rate(target, q, sigma))
    assert float(normal_loss(ss / sigma)) * sigma == pytest.approx((1 - target) * q, rel=1e-6)
    demand = np.random.default_rng(1).normal(200.0, sigma, 400_000)  # lead-time demand per cycle
    short_per_cycle = np.maximum(demand - (200.0 + ss), 0.0).mean()
    assert 1 - short_per_cycle / q == pytest.approx(target, abs=0.001)
    # a large order alone meets the target: no safety stock needed, never negative
    assert safety_stock_fill_rate(0.9, 10_000, 50) == 0.0


def test_round_to_pack_and_moq():
    got = round_to_pack(np.array([0.0, 1.0, 13.0, 25.0]), 6, 12)
    assert got.tolist() == [0.0, 12.0, 18.0, 30.0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: eoq(1300, 0, 0.225), "order cost must be positive"),
        (lambda: eoq(-5, 8, 0.225), "annual demand must be at least 0"),
        (lambda: z_value(1.2), "service level must be between 0 and 1"),
        (lambda: newsvendor(50, np.nan, 0.18, 0.7), "missing or infinite"),
    ],
)
def test_formulas_reject_bad_numbers(call, message):
    with pytest.raises(InputError, match=message):
        call()


# ---- lead times (real purchase orders) -----------------------------------------------------------


def test_lead_time_stats_match_the_purchase_orders(data_dir, bibitor_lt):
    raw = pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    direct = (pd.to_datetime(raw["InvoiceDate"]) - pd.to_datetime(raw["PODate"])).dt.days
    stats = lead_time_stats(bibitor_lt, promised_days=18).set_index("vendor")
    pooled = stats.loc["ALL"]
    assert pooled["n_pos"] == len(raw) == 5543
    assert pooled["mean_days"] == pytest.approx(direct.mean())
    assert pooled["std_days"] == pytest.approx(direct.std())
    assert pooled["p90_days"] == pytest.approx(direct.quantile(0.9))
    assert pooled["on_time_rate"] == pytest.approx((direct <= 18).mean())
    assert not pooled["promised_assumed"]
    vendors = stats.drop(index="ALL")
    assert len(vendors) == raw["VendorNumber"].nunique()
    assert vendors["n_pos"].sum() == len(raw)
    assert stats.notna().all().all()
    biggest = raw["VendorNumber"].value_counts().index[0]
    mine = direct[raw["VendorNumber"] == biggest]
    assert stats.loc[str(biggest), "mean_days"] == pytest.approx(mine.mean())
    # trend: least-squares slope of lead time on PO date, in days per 30 days
    po_days = (pd.to_datetime(raw["PODate"]) - pd.to_datetime(raw["PODate"]).min()).dt.days / 30
    assert pooled["trend_days_per_30d"] == pytest.approx(np.polyfit(po_days, direct, 1)[0], abs=1e-9)


def test_receiving_date_is_preferred_and_po_lines_merge(data_dir):
    lines = pd.read_csv(data_dir / "bibitor" / "PurchasesFINAL12312016_PARTIAL.csv.gz")
    lt = po_lead_times(lines)
    assert len(lt) == lines["PONumber"].nunique()
    po_date = pd.to_datetime(lines["PODate"], dayfirst=True)
    received = pd.to_datetime(lines["ReceivingDate"], dayfirst=True)
    per_po = (received - po_date).dt.days.groupby(lines["PONumber"]).max()
    assert sorted(lt["lead_time_days"]) == sorted(per_po.astype(float))
    invoiced = (pd.to_datetime(lines["InvoiceDate"], dayfirst=True) - po_date).dt.days
    assert lt["lead_time_days"].mean() < invoiced.mean()


def test_open_orders_sampler_and_unknown_vendor(data_dir, bibitor_lt):
    raw = pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    as_of = pd.Timestamp("2016-06-30")
    pending = open_orders(bibitor_lt, as_of)
    expected = (pd.to_datetime(raw["PODate"]) <= as_of) & (pd.to_datetime(raw["InvoiceDate"]) > as_of)
    assert len(pending) == int(expected.sum()) > 0
    sampler = LeadTimeSampler().fit(bibitor_lt)
    draws = sampler.sample(5000, np.random.default_rng(0))
    assert draws.min() >= bibitor_lt["lead_time_days"].min()
    assert draws.max() <= bibitor_lt["lead_time_days"].max()
    assert draws.mean() == pytest.approx(bibitor_lt["lead_time_days"].mean(), abs=0.3)
    with pytest.raises(InputError, match="unknown vendor '424242'"):
        LeadTimeSampler("424242").fit(bibitor_lt)


# ---- ABC / XYZ on real M5 revenue ---------------------------------------------------------------------


def test_abc_pareto_and_kmeans_on_m5_revenue(m5_raw):
    last = m5_raw[m5_raw["date"] > "2015-03-27"]
    revenue = (
        (last["value"] * last["sell_price"].fillna(0)).groupby([last["item_id"], last["store_id"]]).sum()
    )
    abc = abc_pareto(revenue)
    share = revenue / revenue.sum()
    a_share = share[abc == "A"].sum()
    assert a_share >= 0.80 and a_share - share[abc == "A"].min() < 0.80  # the smallest set reaching 80%
    ab_share = share[abc != "C"].sum()
    assert ab_share >= 0.95 and ab_share - share[abc == "B"].min() < 0.95
    assert revenue[abc == "A"].min() >= revenue[abc == "B"].max() >= revenue[abc == "C"].max()
    km = abc_kmeans(revenue)
    assert set(km) == {"A", "B", "C"}
    assert revenue[km == "A"].min() >= revenue[km == "B"].max() >= revenue[km == "C"].max()


def test_xyz_from_weekly_demand_on_m5(m5_long):
    ids = pd.Index(sorted(m5_long["unique_id"].unique()))
    stats = demand_stats(m5_long, ids, 1.0)
    one = m5_long[m5_long["unique_id"] == ids[0]]
    one = one[one["ds"] > one["ds"].max() - pd.Timedelta(days=365)]
    weekly = one.set_index("ds")["y"].resample("W-SUN")
    sums, sizes = weekly.sum(), weekly.size()
    full = sums[sizes == 7]
    assert stats.loc[ids[0], "cv"] == pytest.approx(full.std(ddof=0) / full.mean())
    assert stats.loc[ids[0], "annual_units"] == pytest.approx(one["y"].mean() * 365.25)
    classes = xyz_classes(stats["cv"])
    assert (classes[stats["cv"] <= 0.5] == "X").all() and (classes[stats["cv"] > 1.0] == "Z").all()
    assert parse_class_levels("A=0.99") == {"A": 0.99, "B": 0.95, "C": 0.90}
    with pytest.raises(InputError, match="unknown class 'D'"):
        parse_class_levels("D=0.5")


# ---- per-SKU facts and order advice ---------------------------------------------------------------


@pytest.fixture(scope="module")
def planned(m5_long):
    start = m5_long["ds"].max() + pd.Timedelta(days=1)
    fc = profile_forecast(m5_long, start, 56)
    ids = sorted(fc["unique_id"].unique())
    item, store = zip(*(i.split("/") for i in ids), strict=True)
    stock = pd.DataFrame(
        {
            "item_id": item,
            "store_id": store,
            "on_hand": [0.0 if k % 2 else 400.0 for k in range(len(ids))],
            "backorders": [3.0] + [0.0] * (len(ids) - 1),
            "lead_time_days": 14.0,
            "lead_time_std_days": 2.0,
            "pack_size": 6.0,
            "moq": 12.0,
        }
    )
    open_po = pd.Series({ids[1]: 24.0})
    prices = m5_long.dropna(subset=["sell_price"]).groupby("unique_id")["sell_price"].last()
    planner = InventoryPlanner(PolicySettings(service_level=0.95)).fit(
        fc,
        "D",
        history=m5_long,
        stock=read_params(stock, ["item_id", "store_id"]),
        open_po=open_po,
        prices=prices,
        location_part=1,
    )
    return planner, fc


def test_planner_facts_are_consistent(planned):
    planner, fc = planned
    t = planner.table_.set_index("unique_id")
    numeric = t.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy()).all()
    assert (t["reorder_point"] == t["ltd_mean"] + t["safety_stock"]).all()
    assert np.allclose(t["order_up_to"], t["reorder_point"] + t["eoq"])
    assert np.allclose(t["safety_stock_csl"], norm.ppf(0.95) * t["ltd_std"])
    assert np.allclose(t["inventory_position"], t["on_hand"] + t["open_po"] - t["backorders"])
    # lead-time demand is the forecast summed over the 14-day lead time; FOODS_2_360 came back from a
    # four-month outage 4 weeks before the end of the data: it plans on its in-stock rate instead
    first14 = fc[fc["ds"] < fc["ds"].min() + pd.Timedelta(days=14)].groupby("unique_id")["yhat"].sum()
    first14 = first14.reindex(t.index)
    run = t["stockout_run"]
    assert set(t.index[run]) == {"FOODS_2_360/CA_1", "FOODS_2_360/TX_1", "FOODS_2_360/WI_1"}
    assert np.allclose(t.loc[~run, "ltd_mean"], first14[~run])
    assert (t.loc[run, "ltd_mean"] > first14[run] + 10).all()
    assert set(t["location"]) == {"CA_1", "TX_1", "WI_1"}
    assert set(t["abc"]) <= {"A", "B", "C"} and set(t["xyz"]) <= {"X", "Y", "Z"}


def test_order_advice_from_inventory_position(planned):
    planner, fc = planned
    t = planner.table_.set_index("unique_id")
    order = t["order_qty"] > 0
    assert (order == (t["inventory_position"] <= t["reorder_point"])).all()
    assert order.any() and (~order).any()
    assert (t.loc[order, "order_qty"] % 6 == 0).all() and (t.loc[order, "order_qty"] >= 12).all()
    assert (
        t.loc[order, "inventory_position"] + t.loc[order, "order_qty"] >= t.loc[order, "order_up_to"]
    ).all()
    today = fc["ds"].min()
    assert (t.loc[order, "latest_order_date"] == today).all()
    # for the others, the planned demand (the forecast, or the in-stock rate after a stock-out run)
    # consumes position - reorder point by the latest order date
    later = t[~order & (t["days_to_order"] < 56)]
    cum = pd.DataFrame(planner.paths_.mean, index=planner.paths_.ids).cumsum(axis=1)
    plain = ~planner.stockout_runs_
    expected = fc.pivot(index="unique_id", columns="ds", values="yhat").cumsum(axis=1)
    assert np.allclose(cum[plain], expected.loc[cum.index[plain]])
    for uid, row in later.iterrows():
        days = int(np.floor(row["days_to_order"]))
        used_before = cum.loc[uid].iloc[days - 1] if days > 0 else 0.0
        assert used_before <= row["inventory_position"] - row["reorder_point"] + 1e-9
        assert cum.loc[uid].iloc[days] >= row["inventory_position"] - row["reorder_point"] - 1e-9
    assert (t.loc[order, "stockout_prob"] > t.loc[~order, "stockout_prob"].max()).all()
    orders = planner.orders()
    assert len(orders) == int(order.sum()) and (orders["status"] == "order now").all()
    # stock, backorders, lead times and pack sizes were given; costs were assumed and say so
    assert "on_hand" not in t["assumed"].iloc[0] and "order_cost" in t["assumed"].iloc[0]
    assert set(planner.assumed_) >= {"order_cost", "holding_rate", "unit_cost"}
    assert "pack_size" not in planner.assumed_


def test_service_targets_by_class_and_fill_rate_basis(m5_long):
    start = m5_long["ds"].max() + pd.Timedelta(days=1)
    fc = profile_forecast(m5_long, start, 28)
    by_class = InventoryPlanner().fit(fc, "D", history=m5_long).table_
    assert (by_class["service_level"] == by_class["abc"].map({"A": 0.98, "B": 0.95, "C": 0.90})).all()
    fill = InventoryPlanner(PolicySettings(fill_rate=0.99)).fit(fc, "D", history=m5_long).table_
    assert np.allclose(fill["safety_stock"], fill["safety_stock_fill_rate"])
    kmeans = InventoryPlanner(PolicySettings(abc_method="kmeans")).fit(fc, "D", history=m5_long).table_
    assert set(kmeans["abc"]) <= {"A", "B", "C"}


def test_sigma_from_backtest_residuals(m5_long):
    end = m5_long["ds"].max()
    past = profile_forecast(m5_long, end - pd.Timedelta(days=27), 28)  # a backtest over the last 28 days
    errors = past.merge(m5_long[["unique_id", "ds", "y"]], on=["unique_id", "ds"])
    fc = with_residual_sigma(profile_forecast(m5_long, end + pd.Timedelta(days=1), 28), errors)
    sd = (errors["y"] - errors["yhat"]).groupby(errors["unique_id"]).std()
    assert np.allclose(fc.groupby("unique_id")["sigma"].first(), sd.reindex(sorted(sd.index)))
    stock = pd.DataFrame({"unique_id": sd.index, "lead_time_days": 7.0, "lead_time_std_days": 0.0})
    t = InventoryPlanner().fit(fc, "D", stock=read_params(stock, ["unique_id"])).table_.set_index("unique_id")
    assert np.allclose(t["ltd_std"], np.sqrt(7) * sd.reindex(t.index))
    # lead-time errors: RMS of the errors summed over 7 consecutive days (bias and autocorrelation kept)
    lt = with_residual_sigma(
        profile_forecast(m5_long, end + pd.Timedelta(days=1), 28), errors, lead_periods=7
    )
    one = errors[errors["unique_id"] == sd.index[0]].sort_values("ds")
    week_sums = (one["y"] - one["yhat"]).rolling(7).sum().dropna()
    got = lt.loc[lt["unique_id"] == sd.index[0], "sigma"].iloc[0] * np.sqrt(7)
    assert got == pytest.approx(np.sqrt((week_sums**2).mean()))


def test_bad_inventory_inputs_are_clear(m5_long, bibitor_lt):
    fc = profile_forecast(m5_long, m5_long["ds"].max() + pd.Timedelta(days=1), 28)
    ids = pd.Index(sorted(fc["unique_id"].unique()))
    bad_stock = pd.DataFrame({"unique_id": ids, "on_hand": [-4.0] + [1.0] * (len(ids) - 1)})
    with pytest.raises(InputError, match="on_hand is negative for 1 SKU"):
        InventoryPlanner().fit(fc, "D", stock=read_params(bad_stock, ["unique_id"]))
    no_cost = pd.DataFrame({"unique_id": ids, "unit_cost": [np.nan] + [2.0] * (len(ids) - 1)})
    with pytest.raises(InputError, match="unit_cost is missing for 1 SKU"):
        InventoryPlanner().fit(fc, "D", stock=read_params(no_cost, ["unique_id"]))
    with pytest.raises(InputError, match="zero forecast demand"):
        InventoryPlanner().fit(fc.assign(yhat=0.0, yhat_lower=0.0, yhat_upper=0.0), "D")
    vendors = pd.DataFrame({"unique_id": ids, "vendor": "424242"})
    stats = lead_time_stats(bibitor_lt)
    with pytest.raises(InputError, match="unknown vendor '424242'"):
        resolve_params(ids, InventoryDefaults(), read_params(vendors, ["unique_id"]), vendor_stats=stats)
    with pytest.raises(InputError, match="missing column"):
        forecast_paths(fc.drop(columns="yhat_upper"))


def test_open_orders_from_a_purchase_extract(data_dir):
    lines = pd.read_csv(data_dir / "bibitor" / "PurchasesFINAL12312016_PARTIAL.csv.gz").head(40)
    lines.loc[lines.index[:5], "ReceivingDate"] = None  # five lines not received yet
    open_qty = read_open_orders(lines, ["InventoryId"])
    expected = lines.head(5).groupby("InventoryId")["Quantity"].sum()
    assert open_qty.sort_index().to_dict() == expected.sort_index().astype(float).to_dict()
    with pytest.raises(InputError, match="negative quantity"):
        read_open_orders(lines.assign(Quantity=-1), ["InventoryId"])


def test_vendor_lead_times_flow_into_sku_parameters(m5_long, bibitor_lt):
    stats = lead_time_stats(bibitor_lt)
    ids = pd.Index(sorted(m5_long["unique_id"].unique()))
    vendor = stats["vendor"].iloc[0]
    table = read_params(pd.DataFrame({"unique_id": ids[:1], "vendor": [vendor]}), ["unique_id"])
    params, notes = resolve_params(ids, InventoryDefaults(), table, vendor_stats=stats)
    s = stats.set_index("vendor")
    assert params["lead_time_days"].iloc[0] == pytest.approx(s.loc[vendor, "mean_days"])
    assert params["lead_time_days"].iloc[1] == pytest.approx(s.loc["ALL", "mean_days"])
    assert "pooled" in notes["lead_time_days"]


# ---- policy simulation ---------------------------------------------------------------------------


def test_replay_by_hand():
    # demand 2/period, s = 5, Q = 6 (S = 11), lead time 2, start at S: traced by hand
    actual = np.full((1, 8), 2.0)
    run = _replay(
        actual,
        np.full((1, 8), 5.0),
        np.full((1, 8), 6.0),
        np.full((1, 1, 8), 2),
        np.zeros((1, 1)),
        "order_up_to",
        np.ones(1),
        np.zeros(1),
    )
    # closing 9, 7, 5; t=3: position 5 <= s, order 6 (arrives t=5), close 3; t=4: position 9, close 1;
    # t=5: receive 6 -> 7, close 5; t=6: position 5 <= s, order 6, close 3; t=7: position 9, close 1
    assert run["closing"][0, 0].tolist() == [9, 7, 5, 3, 1, 5, 3, 1]
    assert run["orders"][0, 0].tolist() == [False, False, False, True, False, False, True, False]
    assert run["served"].sum() == actual.sum()


@pytest.fixture(scope="module")
def sim_inputs(m5_raw, bibitor_lt):
    ids = sorted(m5_raw["item_id"].unique())[::3]
    d = m5_raw[m5_raw["item_id"].isin(ids) & m5_raw["store_id"].isin(["CA_1", "TX_2", "WI_3"])]
    d = d[d["date"] > "2015-09-01"]
    long, _, freq = to_long(d, ["item_id", "store_id"], "date", "value", ["sell_price"], "D")
    uids, hist, actual, dates = demand_matrices(long, 28, 56)
    fc = profile_forecast(long, dates[0], 28 + 24)
    prices = (
        long[long["ds"] < dates[0]].dropna(subset=["sell_price"]).groupby("unique_id")["sell_price"].last()
    )
    params, _ = resolve_params(uids, InventoryDefaults(), prices=prices)
    sampler = LeadTimeSampler().fit(bibitor_lt)
    return uids, hist, actual, dates, fc, params, sampler, long


def test_simulation_on_m5_responds_to_service_level(sim_inputs):
    uids, hist, actual, dates, fc, params, sampler, _ = sim_inputs
    issue = align_forecast(fc, uids, dates)
    assert issue[0] == 0
    low = simulate(
        actual, hist, [issue], params, sampler, "D", SimulationSettings(service_level=0.80, reps=8)
    )
    high = simulate(
        actual, hist, [issue], params, sampler, "D", SimulationSettings(service_level=0.99, reps=8)
    )
    for r in (low, high):
        for side in (r.policy, r.baseline):
            assert 0.0 <= side["fill_rate"] <= 1.0
            total = side["holding_cost"] + side["ordering_cost"] + side["stockout_cost"]
            assert side["total_cost"] == pytest.approx(total)
            assert side["stockout_events"] <= side["stockout_days"]
        assert r.change_pct["avg_inventory"] == pytest.approx(
            100 * (r.policy["avg_inventory"] / r.baseline["avg_inventory"] - 1)
        )
    assert high.policy["avg_inventory"] > low.policy["avg_inventory"]
    assert high.policy["stockout_days"] < low.policy["stockout_days"]
    assert high.policy["fill_rate"] > low.policy["fill_rate"]
    # the baseline does not depend on our service level (same draws, same rules)
    assert high.baseline == low.baseline
    full = simulate(
        actual, hist, [issue], params, sampler, "D", SimulationSettings(reps=8, start="order_up_to")
    )
    mid = simulate(actual, hist, [issue], params, sampler, "D", SimulationSettings(reps=8))
    assert full.policy["avg_inventory"] > mid.policy["avg_inventory"]
    assert full.baseline["avg_inventory"] > mid.baseline["avg_inventory"]
    more_cover = simulate(
        actual, hist, [issue], params, sampler, "D", SimulationSettings(reps=8, naive_cover_days=60)
    )
    assert more_cover.baseline["stockout_days"] < low.baseline["stockout_days"]
    assert more_cover.baseline["avg_inventory"] > low.baseline["avg_inventory"]


def test_refreshed_forecasts_are_used_from_their_issue_date(sim_inputs):
    uids, hist, actual, dates, fc, params, sampler, long = sim_inputs
    later = profile_forecast(long, dates[14], 14 + 24)
    issues = [align_forecast(fc, uids, dates), align_forecast(later, uids, dates)]
    assert [p for p, _ in issues] == [0, 14]
    one = simulate(actual, hist, issues[:1], params, sampler, "D", SimulationSettings(reps=4))
    two = simulate(actual, hist, issues, params, sampler, "D", SimulationSettings(reps=4))
    assert two.settings["forecast_issues"] == [0, 14]
    assert two.policy != one.policy and two.baseline == one.baseline
    with pytest.raises(InputError, match="must start on a test date"):
        align_forecast(profile_forecast(long, dates[-1] + pd.Timedelta(days=3), 5), uids, dates)


# ---- command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, m5_small, m5_long):
    root = tmp_path_factory.mktemp("inv")
    m5_small.to_csv(root / "m5.csv", index=False)
    fc = profile_forecast(m5_long, m5_long["ds"].max() + pd.Timedelta(days=1), 42)
    fc.to_csv(root / "fc.csv", index=False)
    first_test = m5_long["ds"].max() - pd.Timedelta(days=27)
    profile_forecast(m5_long, first_test, 28 + 24).to_csv(root / "fc_test.csv", index=False)
    return root


def test_cli_kpis_and_recommend_json(cli_files):
    base = [str(cli_files / "m5.csv"), *M5_ARGS, "--forecast", str(cli_files / "fc.csv")]
    result = runner.invoke(
        app, ["kpis", *base, "--price-col", "sell_price", "--location-col", "store_id", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    n_series = len(pd.read_csv(cli_files / "m5.csv")[["item_id", "store_id"]].drop_duplicates())
    assert out["summary"]["skus"] == len(out["kpis"]) == n_series
    assert {"order_cost", "holding_rate", "on_hand"} <= set(out["assumed"])
    row = out["kpis"][0]
    assert {"safety_stock", "reorder_point", "eoq", "days_of_cover", "stockout_prob", "abc", "xyz"} <= set(
        row
    )
    assert all(v is not None for r in out["kpis"] for v in r.values())
    stored = ResultsStore().load("inventory_kpis", run_id=out["run_id"])
    assert len(stored) == n_series
    result = runner.invoke(app, ["recommend", *base, "--pack-size", "6", "--order-cost", "25", "--json"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert "pack_size" not in rec["assumed"] and "order_cost" not in rec["assumed"]
    assert all(o["order_qty"] % 6 == 0 and o["status"] == "order now" for o in rec["orders"])
    assert len(ResultsStore().load("order_advice", kind="order_advice")) == n_series
    table = runner.invoke(app, ["recommend", *base, "--all"])
    assert table.exit_code == 0 and "order advice" in table.stdout


def test_cli_simulate_json(cli_files, data_dir):
    po = str(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    args = [
        str(cli_files / "m5.csv"),
        *M5_ARGS,
        "--forecast",
        str(cli_files / "fc_test.csv"),
        "--po-history",
        po,
    ]
    result = runner.invoke(app, ["simulate", *args, "--reps", "5", "--price-col", "sell_price", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for side in ("policy", "baseline"):
        assert {"fill_rate", "stockout_days", "stockout_events", "avg_inventory", "total_cost"} <= set(
            out[side]
        )
    assert set(out["change_pct"]) >= {"fill_rate", "stockout_days", "avg_inventory", "total_cost"}
    assert out["settings"]["lead_time_mean_days"] == pytest.approx(16.42, abs=0.01)
    summary = ResultsStore().load("simulation_summary", kind="policy_simulation")
    facts = summary.set_index(["side", "metric"])["value"]
    assert facts[("policy", "fill_rate")] == pytest.approx(out["policy"]["fill_rate"])
    assert facts[("baseline", "stockout_days")] == pytest.approx(out["baseline"]["stockout_days"])
    assert set(summary["side"]) == {"policy", "baseline", "change_pct"}


def test_cli_simulate_with_engine_refreshes(cli_files):
    args = [str(cli_files / "m5.csv"), *M5_ARGS, "--model", "snaive", "--refresh-every", "14"]
    result = runner.invoke(app, ["simulate", *args, "--lead-time-days", "10", "--reps", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["settings"]["forecast_issues"] == [0, 14]
    assert out["settings"]["lead_time_std_days"] == 0.0
    assert any("sigma from lead-time errors of a forecast issued" in n for n in out["notes"])
    base = [str(cli_files / "m5.csv"), *M5_ARGS, "--model", "snaive", "--horizon", "28"]
    with_errors = json.loads(runner.invoke(app, ["kpis", *base, "--residual-periods", "21", "--json"]).stdout)
    interval = json.loads(runner.invoke(app, ["kpis", *base, "--residual-periods", "0", "--json"]).stdout)
    assert any("sigma from lead-time errors" in n for n in with_errors["notes"])
    assert not any("sigma from" in n for n in interval["notes"])
    a = pd.DataFrame(with_errors["kpis"]).set_index("unique_id")
    b = pd.DataFrame(interval["kpis"]).set_index("unique_id")
    assert np.allclose(a["ltd_mean"], b["ltd_mean"]) and not np.allclose(a["ltd_std"], b["ltd_std"])


def test_cli_leadtimes(data_dir):
    po = str(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    result = runner.invoke(app, ["leadtimes", po, "--as-of", "2016-06-30", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["assumed"] == {"promised_days": 14.0}
    pooled = next(v for v in out["vendors"] if v["vendor"] == "ALL")
    assert pooled["n_pos"] == 5543 and pooled["open_pos"] > 0


def test_cli_bad_inputs_exit_2_with_one_line(cli_files, m5_small, data_dir):
    root = cli_files
    ids = m5_small[["item_id", "store_id"]].drop_duplicates()
    ids.assign(on_hand=[-1.0] + [5.0] * (len(ids) - 1)).to_csv(root / "neg.csv", index=False)
    ids.assign(unit_cost=[None] + [2.0] * (len(ids) - 1)).to_csv(root / "nocost.csv", index=False)
    ids.assign(vendor="424242").to_csv(root / "vendor.csv", index=False)
    fc = pd.read_csv(root / "fc.csv")
    fc.assign(yhat=0.0, yhat_lower=0.0, yhat_upper=0.0).to_csv(root / "zero.csv", index=False)
    po = str(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    base = [str(root / "m5.csv"), *M5_ARGS]
    cases = [
        (
            ["kpis", *base, "--forecast", str(root / "fc.csv"), "--stock", str(root / "neg.csv")],
            "on_hand is negative",
        ),
        (
            ["recommend", *base, "--forecast", str(root / "fc.csv"), "--stock", str(root / "nocost.csv")],
            "unit_cost is missing",
        ),
        (["kpis", *base, "--forecast", str(root / "zero.csv")], "zero forecast demand"),
        (
            [
                "recommend",
                *base,
                "--forecast",
                str(root / "fc.csv"),
                "--stock",
                str(root / "vendor.csv"),
                "--po-history",
                po,
            ],
            "unknown vendor '424242'",
        ),
        (
            ["simulate", *base, "--forecast", str(root / "fc.csv"), "--lead-time-days", "5"],
            "must start on a test date",
        ),
        (["kpis", *base, "--forecast", str(root / "fc.csv"), "--service-level", "1.5"], "between 0 and 1"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args[0], result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert "nan" not in result.stdout.lower()


# ---- stock-out runs (censored demand) --------------------------------------------------------------


def test_censored_mask_by_hand():
    # p0 = 12/20 for the first row: a 10-day run has chance 0.6^10 = 0.006, a 2-day run is too short
    row = [3, 4, 0, 0, 5, 2, 3, 6, 2, 4] + [0] * 10
    rare = [0] * 9 + [1] + [0] * 10  # nearly always zero: a long run is ordinary
    mask = censored_mask(np.array([row, rare], dtype=float), threshold=0.01, min_run=3)
    assert mask[0].tolist() == [False] * 10 + [True] * 10
    assert not mask[1].any()
    assert not censored_mask(np.array([row], dtype=float), threshold=0.001, min_run=3).any()


@pytest.fixture(scope="module")
def outage(m5_raw):
    """FOODS_2_360 sold nothing from 2015-10-31 to 2016-02-29 in all ten stores and then sold again;
    with it, steady and rare real sellers of the same stores."""
    items = ["FOODS_2_360", "FOODS_3_586", "HOBBIES_2_025", "FOODS_3_702"]
    d = m5_raw[m5_raw["item_id"].isin(items) & m5_raw["store_id"].isin(["CA_1", "TX_1", "WI_2"])]
    long, _, _ = to_long(d[d["date"] > "2015-01-01"], ["item_id", "store_id"], "date", "value", [], "D")
    return long


def test_stockout_runs_are_found_on_real_sales(outage):
    uids, hist, actual, dates = demand_matrices(outage, 28, 364)
    found = censored_demand(hist)
    flagged = set(uids[found.flag])
    assert flagged == {"FOODS_2_360/CA_1", "FOODS_2_360/TX_1", "FOODS_2_360/WI_2"}
    i = uids.get_loc("FOODS_2_360/WI_2")
    in_stock = hist[i][hist[i] > 0]
    assert in_stock.mean() > found.rate[i] > 10  # the in-stock rate counts its ordinary zero days
    assert found.censored_periods[i] >= 120
    assert (hist[:, -28:].sum(axis=1)[found.flag] == 0).all()


def test_planning_on_in_stock_demand_serves_the_return(outage, bibitor_lt):
    uids, hist, actual, dates = demand_matrices(outage, 28, 364)
    fc = profile_forecast(outage, dates[0], 28 + 24)
    issue = align_forecast(fc, uids, dates)
    params, _ = resolve_params(uids, InventoryDefaults())
    sampler = LeadTimeSampler().fit(bibitor_lt)
    on = simulate(actual, hist, [issue], params, sampler, "D", SimulationSettings(reps=4))
    off = simulate(actual, hist, [issue], params, sampler, "D", SimulationSettings(reps=4, censoring=None))
    back = on.per_series["unique_id"].str.startswith("FOODS_2_360")
    assert actual[back.to_numpy()].sum() > 300  # it did sell again in the test
    assert on.settings["censored_series"] == [3] and off.settings["censored_series"] == []
    assert on.per_series.loc[back, "policy_fill_rate"].min() > 0.9
    assert off.per_series.loc[back, "policy_fill_rate"].max() < 0.5
    assert on.policy["fill_rate"] > off.policy["fill_rate"]
    # the planner does the same from a long history table
    history = outage[outage["ds"] < dates[0]]
    plan = InventoryPlanner().fit(fc, "D", history=history).table_.set_index("unique_id")
    plain = InventoryPlanner(PolicySettings(censoring=None)).fit(fc, "D", history=history).table_
    assert plan.loc["FOODS_2_360/WI_2", "stockout_run"]
    assert plan["stockout_run"].sum() == 3
    assert plan.loc["FOODS_2_360/WI_2", "reorder_point"] > 100
    assert plain.set_index("unique_id").loc["FOODS_2_360/WI_2", "reorder_point"] < 1
    with pytest.raises(InputError, match="alpha"):
        CensoringSettings(alpha=2.0)
