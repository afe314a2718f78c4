"""The weekly report on a real week of the demo data (UCI Online Retail, week of 2011-11-14, six SKUs):
pipeline runs for that week and the week before, every section, tables equal to the store, valid PNG
charts, the HTML rendered in headless Chromium, the guarded summary, the `--json` shape, the store row,
the knowledge-base document and the scheduler's cron trigger. The summary is written by the real bundled
language model."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.report_render import ACCURACY_COLUMNS, format_value
from api.report_weekly import ReportSettings, generate_weekly_report, latest_report, report_for
from api.scheduler import JOB_ID, cron_trigger, start_scheduler
from forecasting.errors import InputError
from forecasting.settings import get_settings
from forecasting.store import ResultsStore
from llm.config import LLMSettings, get_llm_settings
from llm.facts import as_facts
from llm.generate import LocalWriter
from llm.guard import check_numbers
from llm.model import load_model

SKUS = ["85123A", "85099B", "22197", "84077", "22616", "21977"]
AS_OF = "2011-11-20"  # a Sunday: the report covers the week Monday 2011-11-14 .. Sunday 2011-11-20
WEEK = pd.Timestamp("2011-11-14")
SECTIONS = [
    "Summary",
    "Top reorder recommendations",
    "Stockout risks before the next delivery",
    "Forecast accuracy last week",
    "Accuracy trend over recent weeks",
    "Biggest forecast changes vs last week",
    "ABC/XYZ overview",
    "Supplier lead-time changes",
    "Unusual orders",
    "Demand history and forecast of the top items",
]
SETTINGS = ReportSettings(report_trend_weeks=3, report_horizon=4, report_model="ets", report_top=5)


@pytest.fixture(scope="module")
def report_home(tmp_path_factory, model_dir):
    home = tmp_path_factory.mktemp("report") / ".stockpilot"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STOCKPILOT_HOME", str(home))
        mp.setenv("STOCKPILOT_MODEL_DIR", model_dir)
        mp.setenv("STOCKPILOT_LLM_MAX_NEW_TOKENS", "60")
        mp.setenv("STOCKPILOT_LLM_ADAPTER", "none")
        get_settings.cache_clear()
        get_llm_settings.cache_clear()
        yield home
    get_settings.cache_clear()
    get_llm_settings.cache_clear()


@pytest.fixture(autouse=True)
def stockpilot_home(report_home):
    """Overrides the per-test home: every test reads the module's report and store."""
    get_settings.cache_clear()
    return report_home


@pytest.fixture(scope="module")
def store(report_home) -> ResultsStore:
    return ResultsStore()


@pytest.fixture(scope="module")
def report(report_home, store):
    loaded = load_model(
        LLMSettings(llm="bundled", llm_adapter="none"), models_path=os.environ["STOCKPILOT_MODEL_DIR"]
    )
    writer = LocalWriter(loaded, max_new_tokens=60, threads=1)
    return generate_weekly_report(AS_OF, store=store, skus=SKUS, writer=writer, settings=SETTINGS)


def section(markdown: str, title: str) -> str:
    """The Markdown of one section (up to the next `## ` heading)."""
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 3)
    return markdown[start : end if end > 0 else None]


def table_rows(text: str) -> list[dict[str, str]]:
    """The first Markdown table in `text` as dicts by header."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in ln.strip("|").split("|")], strict=True)) for ln in lines[2:]]


def test_report_covers_the_requested_week_with_runs_for_it_and_the_week_before(report, store):
    assert report.as_of == WEEK
    runs = store.runs("pipeline")
    as_of = runs["params"].map(lambda p: json.loads(p)["as_of"])
    assert set(as_of) == {"2011-11-07", "2011-11-14"}
    assert report.run_id == runs.loc[as_of == "2011-11-14", "run_id"].iloc[0]
    assert report.previous_run_id == runs.loc[as_of == "2011-11-07", "run_id"].iloc[0]


def test_every_section_is_in_markdown_and_html(report):
    markdown = report.paths["markdown"].read_text()
    html = report.paths["html"].read_text()
    for title in SECTIONS:
        assert f"## {title}\n" in markdown, title
        assert f">{title}</h2>" in html, title
    assert "week of 14 November 2011" in markdown
    assert report.paths["markdown"].parent == get_settings().home / "reports" / "weekly" / "2011-11-14"


def test_recommendation_and_risk_tables_equal_the_store(report, store):
    md = report.paths["markdown"].read_text()
    advice = store.load("order_advice", report.run_id).set_index("unique_id")
    to_order = advice[advice["status"] == "order now"]
    assert f"{len(to_order):,} SKUs to order now" in md
    rows = table_rows(section(md, "Top reorder recommendations"))
    assert 0 < len(rows) == min(len(to_order), SETTINGS.report_top)
    for row in rows:
        a = to_order.loc[row["SKU"]]
        assert row["Quantity"] == f"{a['order_qty']:,.0f}"
        assert row["Order by"] == f"{pd.Timestamp(a['latest_order_date']):%Y-%m-%d}"
        assert row["Stockout probability"] == f"{100 * a['stockout_prob']:.1f}%"
        assert row["Order value"] == f"{a['order_value']:,.2f}"
    kpis = store.load("inventory_kpis", report.run_id).set_index("unique_id")
    risk_rows = table_rows(section(md, "Stockout risks before the next delivery"))
    expected = kpis[kpis["stockout_prob"] >= 0.05].sort_values("stockout_prob", ascending=False)
    assert [r["SKU"] for r in risk_rows] == list(expected.index[: SETTINGS.report_top])
    for row in risk_rows:
        assert row["Stockout probability"] == f"{100 * kpis.loc[row['SKU'], 'stockout_prob']:.1f}%"
        assert row["Reorder point"] == f"{kpis.loc[row['SKU'], 'reorder_point']:,.0f}"


def test_last_week_accuracy_is_the_stored_forecast_against_what_sold(report, store):
    """Recomputed here from the raw store tables: the previous run's forecast for the week vs demand."""
    fc = store.load("forecasts", report.previous_run_id)
    fc = fc[pd.to_datetime(fc["ds"]) == WEEK].set_index("unique_id")["yhat"]
    demand = store.load("demand", report.run_id)
    sold = demand[pd.to_datetime(demand["ds"]) == WEEK].set_index("unique_id")["y"]
    err = fc.reindex(sold.index) - sold
    rows = table_rows(section(report.paths["markdown"].read_text(), "Forecast accuracy last week"))
    overall = next(r for r in rows if r["By"] == "all")
    assert overall["SKUs"] == str(len(SKUS))
    assert overall["Sold"] == f"{sold.sum():,.0f}"
    assert overall["MAE"] == format_value(err.abs().mean(), ACCURACY_COLUMNS["mae"][1])
    assert overall["Bias"] == format_value(err.mean(), ACCURACY_COLUMNS["bias"][1])
    smape = (200 * err.abs() / (fc.reindex(sold.index).abs() + sold.abs())).mean()
    assert overall["sMAPE"] == f"{smape:.1f}%"
    classes = store.load("demand_classes", report.run_id)["demand_class"].value_counts()
    by_class = {r["Group"]: int(r["SKUs"]) for r in rows if r["By"] == "demand class"}
    assert by_class == classes.to_dict()
    trend = table_rows(section(report.paths["markdown"].read_text(), "Accuracy trend over recent weeks"))
    assert [r["Week"] for r in trend] == ["2011-10-31", "2011-11-07", "2011-11-14"]
    assert trend[-1]["Forecast source"] == f"stored forecast (run {report.previous_run_id})"
    assert all(r["Forecast source"] == "rolling-origin refit (ets)" for r in trend[:-1])
    assert trend[-1]["MAE"] == overall["MAE"]


def test_forecast_changes_equal_the_two_runs_forecasts(report, store):
    now = store.load("forecasts", report.run_id).groupby("unique_id")["yhat"].sum()
    before = store.load("forecasts", report.previous_run_id).groupby("unique_id")["yhat"].sum()
    rows = table_rows(section(report.paths["markdown"].read_text(), "Biggest forecast changes vs last week"))
    assert len(rows) == min(len(SKUS), SETTINGS.report_top)
    changes = [abs(now[r["SKU"]] - before[r["SKU"]]) for r in rows]
    assert changes == sorted(changes, reverse=True)
    for row in rows:
        assert row["Forecast now"] == f"{now[row['SKU']]:,.0f}"
        assert row["Forecast last week"] == f"{before[row['SKU']]:,.0f}"
        assert row["Likely reason"] in {"price", "event", "trend", "model", "stable", "other"}


def test_abc_xyz_counts_and_unusual_orders_come_from_the_data(report, store):
    md = report.paths["markdown"].read_text()
    kpis = store.load("inventory_kpis", report.run_id)
    rows = table_rows(section(md, "ABC/XYZ overview"))
    for row in rows:
        if row["ABC"] == "all":
            assert row["all"] == str(len(kpis))
        else:
            assert row["all"] == str(int((kpis["abc"] == row["ABC"]).sum()))
    from forecasting.demo import demo_transactions

    raw = demo_transactions()
    unusual = table_rows(section(md, "Unusual orders"))
    assert unusual, "the demo week has unusual orders"
    for row in unusual:
        lines = raw[raw["InvoiceNo"].astype(str) == row["Invoice"]]
        assert len(lines) == int(row["Lines"])
        assert WEEK <= pd.Timestamp(row["Placed"]) < WEEK + pd.Timedelta(days=7)
    assert "No purchase-order history" in section(md, "Supplier lead-time changes")


def test_charts_are_valid_pngs(report):
    from PIL import Image

    assert set(report.charts) == {"accuracy_trend", "top_risks", "history_forecast"}
    for name, path in report.charts.items():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        image = Image.open(io.BytesIO(data))
        image.verify()
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 10, name
        assert f"({name}.png)" in report.paths["markdown"].read_text()


def test_html_renders_in_headless_chromium(report, browser):
    from PIL import Image

    html = report.paths["html"].read_text()
    assert 'src="http' not in html and "<link" not in html  # self-contained
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(report.paths["html"].resolve().as_uri())
    loaded = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    headings = page.locator("h2").all_inner_texts()
    shot = page.screenshot(full_page=True)
    page.close()
    assert loaded == [True, True, True]
    assert headings[: len(SECTIONS)] == SECTIONS
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.shape[0] > 2000 and pixels.var() > 100  # a long page, not blank


def test_summary_numbers_are_all_facts(report):
    facts = as_facts(report.facts)
    assert report.summary and report.summary_check["ok"]
    assert check_numbers(report.summary, facts).ok
    names = {f.name for f in facts}
    assert {"SKUs to order now", "forecast MAE last week", "highest stockout risk SKU"} <= names
    by = {f.name: f.value for f in facts}
    assert by["SKUs to order now"] == report.to_order_now
    assert all(f.source.startswith("report:weekly:2011-11-14@run ") for f in facts)


def test_a_summary_must_name_the_key_facts(report):
    """The plain summary names all four headline facts and passes the guard; a model text whose numbers are
    all true but that names none of them is not used."""
    from api.report_weekly import KEY_FACTS, fallback_summary, key_facts_named

    facts = as_facts(report.facts)
    plain = fallback_summary(facts)
    assert check_numbers(plain, facts).ok
    assert key_facts_named(plain, facts) == len(KEY_FACTS)
    vague = "The report highlighted the biggest stockout risk, a 2011-11-14 order from a company."
    assert check_numbers(vague, facts).ok and key_facts_named(vague, facts) == 0
    if not report.summary_check["fallback_used"]:
        assert key_facts_named(report.summary, facts) >= 2


def test_report_is_stored_listed_and_in_the_knowledge_base(report, store):
    rows = store.load("weekly_reports")
    assert set(rows["as_of"]) == {"2011-11-14"} and set(rows["run_id"]) == {report.run_id}
    assert report.summary in set(rows["summary"])
    latest = latest_report(store)
    assert latest["html_path"] == str(report.paths["html"].resolve()) and latest["pdf_path"] is None
    assert report_for("2011-11-17", store)["as_of"] == "2011-11-14"
    assert report_for("2011-11-21", store) is None
    assert report.indexed
    from rag.index import HybridIndex

    doc = HybridIndex.open().get("report:weekly:2011-11-14")
    assert doc is not None and "Top reorder recommendations" in doc.text


def test_cli_json_shape_and_bad_date(report, store):
    runner = CliRunner()
    result = runner.invoke(app, ["report", "weekly", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"markdown", "html", "pdf", "summary", "facts", "recommendations"}
    assert out["markdown"].endswith("2011-11-14/report.md") and out["pdf"] is None
    assert out["recommendations"] == report.to_order_now
    assert check_numbers(out["summary"], as_facts(out["facts"])).ok
    bad = runner.invoke(app, ["report", "weekly", "--as-of", "someday"])
    assert bad.exit_code == 2 and "not a date" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_scheduler_registers_the_configured_cron_trigger(monkeypatch):
    monkeypatch.setenv("STOCKPILOT_REPORT_CRON", "wed 06:30")
    monkeypatch.setenv("STOCKPILOT_REPORT_TIMEZONE", "Europe/London")
    scheduler = start_scheduler(start=False)
    trigger = scheduler.get_job(JOB_ID).trigger
    fields = {f.name: str(f) for f in trigger.fields}
    assert (fields["day_of_week"], fields["hour"], fields["minute"]) == ("wed", "6", "30")
    assert str(trigger.timezone) == "Europe/London"
    # crontab counts Monday as 1 (APScheduler 3 would read it as Tuesday without the conversion)
    monday = cron_trigger("0 7 * * 1").get_next_fire_time(None, pd.Timestamp("2026-11-24 08:00", tz="UTC"))
    assert (monday.strftime("%a %H:%M"), monday.date().isoformat()) == ("Mon 07:00", "2026-11-30")
    with pytest.raises(InputError, match="REPORT_CRON"):
        cron_trigger("mondays at seven")


def test_supplier_lead_time_changes_from_real_purchase_orders(tmp_path, data_dir):
    """Bibitor POs: statistics of the POs up to September against those of the whole year, as two runs."""
    from api.report_render import LEAD_TIME_COLUMNS, table_cells
    from api.report_weekly import lead_time_changes
    from forecasting.inventory.leadtime import lead_time_stats, po_lead_times

    lt = po_lead_times(pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv"))
    store = ResultsStore(f"sqlite:///{tmp_path / 'lt.db'}")
    store.save("supplier_lead_times", lead_time_stats(lt[lt["po_date"] < "2016-10-01"]), "before")
    store.save("supplier_lead_times", lead_time_stats(lt), "now")
    table = lead_time_changes(store, "now", "before")
    done = lt.dropna(subset=["lead_time_days"])
    now = done.groupby("vendor")["lead_time_days"].mean()
    before = done[done["po_date"] < "2016-10-01"].groupby("vendor")["lead_time_days"].mean()
    vendors = table[table["vendor"].astype(str) != "ALL"].set_index("vendor")
    assert len(vendors) == len(now)
    expected = (now - before).reindex(vendors.index)
    assert np.allclose(vendors["change_days"], expected, equal_nan=True)
    changes = table["change_days"].abs().dropna().to_list()
    assert changes == sorted(changes, reverse=True) and max(changes) > 0
    assert lead_time_changes(store, "missing-run", "before") is None
    header, rows = table_cells(table, LEAD_TIME_COLUMNS)
    assert header[:3] == ["Supplier", "POs", "Mean lead time (days)"] and len(rows) == len(table)
