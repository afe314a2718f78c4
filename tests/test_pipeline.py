"""The pipeline on real data (embedded UCI Online Retail demo data and a small M5 slice): one run id for every
table, the active-run pointer, FactBook facts equal to the stored tables, SKU matching, the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from forecasting.data import to_long
from forecasting.demo import demo_demand
from forecasting.errors import InputError
from forecasting.factbook import EMPTY_MESSAGE, FactBook
from forecasting.inventory.leadtime import po_lead_times
from forecasting.pipeline import (
    CHANGE_COLUMNS,
    RUN_KIND,
    activate_run,
    active_run_id,
    attributes_from,
    run_pipeline,
)
from forecasting.settings import get_settings
from forecasting.store import ResultsStore

runner = CliRunner()
FAST = {"model": "sba", "baselines": ("ma",)}
M5_EXOG = ["sell_price", "snap", "event_name_1"]
DRIVERS = {"price", "event", "trend", "model", "stable", "other"}


@pytest.fixture(scope="module")
def demo():
    """40 real demo SKUs (the best sellers, 85123A among them) of the embedded weekly demand."""
    demand, _report, freq, descriptions = demo_demand()
    top = demand.groupby("unique_id")["y"].sum().nlargest(40).index
    return demand[demand["unique_id"].isin(top)].reset_index(drop=True), freq, descriptions


@pytest.fixture(scope="module")
def m5_tiny(m5_small) -> pd.DataFrame:
    """6 real M5 item/store series (2 stores), the last 300 days."""
    d = m5_small[m5_small["store_id"].isin(["CA_1", "TX_1"])]
    items = sorted(d["item_id"].unique())[:3]
    return d[d["item_id"].isin(items) & (d["date"] > "2015-06-01")].reset_index(drop=True)


def test_pipeline_saves_every_table_under_one_run_and_tracks_the_active_run(demo):
    demand, freq, descriptions = demo
    store = ResultsStore()
    first = run_pipeline(
        demand, freq, 4, descriptions=descriptions, dataset="demo", as_of="2011-10-31", **FAST
    )
    assert first.demand["ds"].max() == pd.Timestamp("2011-10-31")
    assert first.changes.empty  # nothing to compare with yet
    second = run_pipeline(demand, freq, 4, descriptions=descriptions, dataset="demo", **FAST)
    runs = store.runs(RUN_KIND)
    assert set(runs["run_id"]) == {first.run_id, second.run_id}
    skus = set(second.forecast["unique_id"])
    assert skus == set(second.demand["unique_id"]) and len(skus) >= 35  # short new SKUs are left out
    for table in (
        "demand",
        "demand_classes",
        "backtest_metrics",
        "forecasts",
        "sku_descriptions",
        "inventory_kpis",
        "order_advice",
        "forecast_changes",
    ):
        rows = store.load(table, second.run_id)
        assert len(rows), table
        assert set(rows["run_id"]) == {second.run_id}
        if "unique_id" in rows.columns:
            assert set(rows["unique_id"]) == skus, table
    assert set(store.load("backtest_metrics", second.run_id)["model"]) == {"sba", "ma"}
    # the forecast moved because 5 more weeks were seen: changes compare the two runs' horizon totals
    changes = store.load("forecast_changes", second.run_id).set_index("unique_id")
    assert set(changes.columns) == {"run_id", *CHANGE_COLUMNS[1:]}
    before = first.forecast.groupby("unique_id")["yhat"].sum()
    now = second.forecast.groupby("unique_id")["yhat"].sum()
    assert changes["total_before"].to_dict() == pytest.approx(before.to_dict())
    assert changes["total_now"].to_dict() == pytest.approx(now.to_dict())
    assert set(changes["driver"]) <= DRIVERS and (changes["previous_run_id"] == first.run_id).all()
    surprise = changes.dropna(subset=["surprise_pct"])
    assert len(surprise) and (surprise["actual_since"] >= 0).all()
    # every assumed planner input is recorded with the run
    params = json.loads(runs.set_index("run_id").loc[second.run_id, "params"])
    assert {"on_hand", "lead_time_days", "order_cost"} <= set(params["assumed"])
    # the newest run is active; activating the older one keeps the newer for a rollback
    assert active_run_id(store) == second.run_id
    pointer = activate_run(first.run_id, store)
    assert active_run_id(store) == first.run_id and pointer["previous"] == second.run_id
    saved = json.loads((get_settings().home / "active_run.json").read_text())
    assert saved["run_id"] == first.run_id
    activate_run(pointer["previous"], store)
    assert FactBook.from_store(store).run_id == second.run_id
    with pytest.raises(InputError, match="no pipeline run"):
        activate_run("nope", store)


def test_factbook_facts_equal_the_stored_tables(demo):
    demand, freq, descriptions = demo
    result = run_pipeline(demand, freq, 4, descriptions=descriptions, dataset="demo", **FAST)
    book = FactBook.from_store()
    assert (book.run_id, book.freq, book.as_of) == (result.run_id, freq, "2011-12-05")
    kpis = ResultsStore().load("inventory_kpis", result.run_id).set_index("unique_id")
    fc = ResultsStore().load("forecasts", result.run_id)
    for sku in ("85123A", book.skus[0], book.risks()["unique_id"].iloc[0]):
        facts = {f["name"]: f for f in book.sku_facts(sku)}
        assert {f["source"] for f in facts.values()} == {f"sku:{sku}@run {result.run_id}"}
        row = kpis.loc[sku]
        for name, col in (
            ("reorder point", "reorder_point"),
            ("safety stock", "safety_stock"),
            ("EOQ", "eoq"),
            ("order-up-to level", "order_up_to"),
            ("recommended order quantity", "order_qty"),
            ("days of cover", "days_of_cover"),
        ):
            assert facts[name]["value"] == pytest.approx(row[col], abs=0.005), name
            assert facts[name]["unit"] in ("units", "days")
        assert facts["stockout probability before the next delivery"]["value"] == pytest.approx(
            row["stockout_prob"], abs=5e-5
        )
        assert facts["order by"] == {
            "name": "order by",
            "value": pd.Timestamp(row["latest_order_date"]).date().isoformat(),
            "unit": "date",
            "source": f"sku:{sku}@run {result.run_id}",
        }
        assert facts["ABC class"]["value"] == row["abc"]
        mine = fc[fc["unique_id"] == sku].sort_values("ds")
        assert facts["forecast next 4 weeks"]["value"] == pytest.approx(mine["yhat"].sum(), abs=0.005)
        assert facts["forecast next week, 90% interval high"]["value"] == pytest.approx(
            mine["yhat_upper"].iloc[0], abs=0.005
        )
        hist = demand[demand["unique_id"] == sku].sort_values("ds")
        assert facts["demand last 4 weeks"]["value"] == pytest.approx(hist["y"].tail(4).sum())
        assert book.history(sku, 4)["y"].tolist() == hist["y"].tail(4).tolist()
        assert book.kpis(sku)["reorder_point"] == pytest.approx(row["reorder_point"])
    assert book.description("85123A") == descriptions["85123A"]
    orders = book.orders()
    assert (orders["status"] == "order now").all()
    assert set(orders["unique_id"]) == set(kpis.index[kpis["status"] == "order now"])
    risks = book.risks()
    assert risks["stockout_prob"].is_monotonic_decreasing


def test_unknown_sku_gets_close_matches(demo):
    demand, freq, descriptions = demo
    run_pipeline(demand, freq, 4, descriptions=descriptions, dataset="demo", **FAST)
    book = FactBook.from_store()
    assert book.match_skus("what is the reorder point of 85123a?")[0] == ("85123A", 100.0)
    by_words = [sku for sku, _ in book.match_skus("white hanging heart t-light holder")]
    assert by_words[0] == "85123A"
    with pytest.raises(InputError) as err:
        book.sku_facts("85123X")
    message = str(err.value)
    assert "85123X" in message and "85123A" in message and "\n" not in message
    assert "no SKU is close" in book.unknown_sku_message("zzqqxx")


def test_factbook_on_an_empty_store_says_what_to_run():
    with pytest.raises(InputError, match="no pipeline results yet") as err:
        FactBook.from_store()
    assert str(err.value) == EMPTY_MESSAGE
    runs = ResultsStore().runs("pipeline")  # no runs: an empty table with its columns, not a bare frame
    assert runs.empty and {"run_id", "kind", "created_at", "params"} <= set(runs.columns)


def test_m5_attributes_future_exogenous_changes_and_suppliers(m5_tiny, data_dir):
    long, _, freq = to_long(m5_tiny, ["store_id", "item_id"], "date", "value", M5_EXOG, "D")
    attrs = attributes_from(m5_tiny, ["store_id", "item_id"])
    po = pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    lead_times = po_lead_times(po, "VendorNumber", "PODate", ["InvoiceDate"])
    common = {"attributes": attrs, "dataset": "m5", "lead_times": lead_times, **FAST}
    first = run_pipeline(long, freq, 14, as_of="2016-02-14", **common)
    second = run_pipeline(long, freq, 14, as_of="2016-03-13", **common)
    assert second.demand["ds"].max() == pd.Timestamp("2016-03-13")
    book = FactBook.from_store()
    assert book.run_id == second.run_id and len(book.skus) == 6
    assert book.stores() == ["CA_1", "TX_1"]
    sku = book.skus[0]
    store, item = sku.split("/")
    attrs_of = book.attributes(sku)
    assert attrs_of["store"] == store and attrs_of["item"] == item
    assert attrs_of["category"] == m5_tiny.loc[m5_tiny["item_id"] == item, "cat_id"].iloc[0]
    assert len(book.skus_with("store", "CA_1")) == 3
    # known future prices/events come from the rows after as-of; changes name a driver
    changes = book.forecast_changes()
    assert len(changes) == 6 and set(changes["driver"]) <= DRIVERS
    assert changes["price_now"].notna().all() and changes["price_before"].notna().all()
    assert changes["event_periods_now"].notna().all()
    events = m5_tiny[(m5_tiny["date"] > "2016-03-13") & (m5_tiny["date"] <= "2016-03-27")]
    n_events = events.groupby(["store_id", "item_id"])["event_name_1"].count()
    assert changes.set_index("unique_id").loc[sku, "event_periods_now"] == n_events.loc[(store, item)]
    assert first.run_id == changes["previous_run_id"].iloc[0]
    # a part of an item/store id matches every store's series
    assert {s for s, score in book.match_skus(item) if score == 95.0} == {f"CA_1/{item}", f"TX_1/{item}"}
    # supplier lead times from the Bibitor purchase orders
    table = ResultsStore().load("supplier_lead_times", second.run_id).set_index("vendor")
    vendor = book.suppliers()[0]
    facts = {f["name"]: f["value"] for f in book.supplier_facts(vendor)}
    assert facts["mean lead time"] == pytest.approx(table.loc[vendor, "mean_days"], abs=0.005)
    assert facts["purchase orders"] == table.loc[vendor, "n_pos"]
    with pytest.raises(InputError, match="unknown supplier"):
        book.supplier_facts("no such vendor")
    group = {f["name"]: f["value"] for f in book.group_facts("category", attrs_of["category"])}
    assert group["SKUs"] == len(book.skus_with("category", attrs_of["category"]))


def test_cli_pipeline_on_m5_and_bad_input(m5_tiny, tmp_path):
    path = tmp_path / "m5.csv"
    m5_tiny.to_csv(path, index=False)
    args = [str(path), "--id-cols", "store_id,item_id", "--date-col", "date", "--target-col", "value"]
    args += ["--freq", "D", "--horizon", "7", "--model", "sba", "--exog-cols", "sell_price"]
    result = runner.invoke(app, ["pipeline", *args, "--dataset", "m5cli", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["series"] == 6 and out["dataset"] == "m5cli"
    assert FactBook.from_store().run_id == out["run_id"]
    assert "category" in FactBook.from_store().attributes(FactBook.from_store().skus[0])
    bad = runner.invoke(app, ["pipeline", *args, "--as-of", "yesterday-ish"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().count("\n") == 0 and "as-of" in bad.stderr
    missing = runner.invoke(app, ["pipeline", *args, "--target-col", "units"])
    assert missing.exit_code == 2 and "missing column" in missing.stderr


def test_cli_pipeline_on_invoice_lines(data_dir, tmp_path):
    lines = pd.read_parquet(data_dir / "online_retail" / "online_retail.parquet")
    top = lines.groupby("StockCode")["Quantity"].sum().nlargest(8).index
    path = tmp_path / "lines.csv"
    lines[lines["StockCode"].isin(top)].to_csv(path, index=False)
    args = ["pipeline", str(path), "--transactions", "--id-cols", "StockCode", "--date-col", "InvoiceDate"]
    args += ["--target-col", "Quantity", "--freq", "W", "--horizon", "4", "--model", "sba", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    book = FactBook.from_store()
    assert book.run_id == out["run_id"] and set(book.skus) <= {str(s).upper() for s in top}
    assert book.description("85123A") == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert "sold lines" in out["notes"][0]
    two_ids = runner.invoke(app, [*args[:4], "StockCode,Country", *args[5:]])
    assert two_ids.exit_code == 2 and "one id column" in two_ids.stderr
