"""The HTTP API over a real pipeline run (the 25 best-selling UCI Online Retail SKUs, 4-week horizon)."""

from __future__ import annotations

import json
import stat
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import APISettings
from api.jobs import backtest_gate
from forecasting.factbook import FactBook
from forecasting.pipeline import active_run_id
from forecasting.settings import get_settings
from forecasting.store import ResultsStore

SKU = "85123A"  # WHITE HANGING HEART T-LIGHT HOLDER, among the best sellers


@pytest.fixture(autouse=True)
def stockpilot_home(pipeline_home):
    """Overrides the per-test home: every test here reads the module's pipeline run."""
    get_settings.cache_clear()
    return pipeline_home


@pytest.fixture(scope="module")
def app(pipeline_home):
    return create_app(APISettings())


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        c.headers["X-API-Key"] = app.state.api_keys[0]
        yield c


@pytest.fixture(scope="module")
def book(pipeline_home):
    return FactBook.from_store()


def test_key_file_is_generated_owner_only_and_required(app, client, pipeline_home):
    key_file = pipeline_home / "api_key"
    assert app.state.api_key_file == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == app.state.api_keys[0]
    assert len(app.state.api_keys[0]) >= 40
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": app.state.api_keys[0] + "x"}):
        r = client.get(f"/forecast/item/{SKU}", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"detail": "Unauthorized"}  # no hint about why
    assert client.get("/health", headers={"X-API-Key": ""}).status_code == 200
    assert client.get("/", headers={"X-API-Key": ""}).status_code == 200
    # the same key file is reused by the next app, not replaced
    assert create_app(APISettings()).state.api_keys == app.state.api_keys


def test_lifespan_schedules_the_weekly_report(app, client):
    job = app.state.scheduler.get_job("weekly-report")
    assert job is not None and job.next_run_time.strftime("%a %H:%M") == "Mon 07:00"


def test_health_reports_run_freshness_models_and_index(client, book):
    r = client.get("/health", headers={"X-API-Key": ""})
    body = r.json()
    assert body["status"] == "ok"
    assert body["run_id"] == book.run_id == active_run_id()
    assert body["skus"] == len(book.skus) == book.table("forecasts")["unique_id"].nunique() >= 20
    assert body["data_as_of"] == book.table("demand")["ds"].max().date().isoformat()
    assert body["data_age_days"] > 365 * 10  # UCI data ends in December 2011
    assert body["models"]["forecast"]["model"] == "auto"
    rmsse = book.metrics().set_index("model").loc["auto", "rmsse"]
    assert body["models"]["forecast"]["backtest_rmsse"] == pytest.approx(rmsse)
    assert sum(body["models"]["forecast"]["skus_by_model"].values()) == body["skus"]
    assert body["models"]["llm"]["backend"] == "bundled"
    manifest = json.loads((get_settings().home / "index" / "manifest.json").read_text())
    assert body["index"]["built"] and body["index"]["documents"] == manifest["count"] > 40


def test_forecast_item_matches_the_store(client, book):
    r = client.get(f"/forecast/item/{SKU}", params={"history": 10})
    assert r.status_code == 200
    body = r.json()
    assert body["sku"] == SKU and body["description"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    stored = book.store.load("forecasts", book.run_id)
    stored = stored[stored["unique_id"] == SKU].sort_values("ds")
    assert [p["yhat"] for p in body["forecast"]] == pytest.approx(stored["yhat"].tolist())
    assert [p["ds"] for p in body["forecast"]] == [d.date().isoformat() for d in pd.to_datetime(stored["ds"])]
    assert body["model"] == stored["model"].iloc[0]
    for p in body["forecast"]:
        assert p["yhat_lower"] <= p["yhat"] <= p["yhat_upper"]
    hist = book.history(SKU, periods=10)
    assert [p["y"] for p in body["history"]] == hist["y"].tolist()
    assert body["history"][-1]["ds"] < body["forecast"][0]["ds"]


def test_unknown_sku_is_404_with_close_matches(client):
    r = client.get("/forecast/item/85123")
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "85123A" in detail["close_matches"]
    assert "not in the current results" in detail["message"]
    assert client.get("/kpis/NOPE-000").status_code == 404


def test_sku_with_a_slash_or_dots_is_looked_up_not_used_as_a_path(client):
    r = client.get("/forecast/item/../../etc/passwd")
    assert r.status_code == 404
    assert client.get("/forecast/item/85123A/extra").status_code == 404


def test_batch_forecast_and_limits(client, book):
    skus = book.skus[:3]
    r = client.post("/forecast/items", json={"skus": [*skus, "85123", skus[0]], "history": 2})
    body = r.json()
    assert r.status_code == 200
    assert [i["sku"] for i in body["items"]] == skus
    assert all(len(i["history"]) == 2 for i in body["items"])
    assert body["not_found"][0]["sku"] == "85123" and "85123A" in body["not_found"][0]["close_matches"]
    r = client.post("/forecast/items", json={"skus": ["X"] * 101})
    assert r.status_code == 422 and "limited to 100 SKUs" in r.json()["detail"][0]["msg"]
    r = client.get(f"/forecast/item/{SKU}", params={"history": 10_000})
    assert r.status_code == 422 and "520 periods" in r.json()["detail"][0]["msg"]
    assert client.post("/forecast/items", json={"skus": []}).status_code == 422


def test_kpis_are_the_planner_figures(client, book):
    body = client.get(f"/kpis/{SKU}").json()
    row = book.store.load("inventory_kpis", book.run_id).set_index("unique_id").loc[SKU]
    assert body["kpis"]["reorder_point"] == pytest.approx(row["reorder_point"])
    assert body["kpis"]["safety_stock"] == pytest.approx(row["safety_stock"])
    facts = {f["name"]: f for f in body["facts"]}
    assert facts["reorder point"]["value"] == pytest.approx(round(row["reorder_point"], 2))
    assert facts["reorder point"]["source"] == f"sku:{SKU}@run {book.run_id}"


def test_recommendations_filters(client, book):
    advice = book.store.load("order_advice", book.run_id)
    now = advice[advice["status"] == "order now"]
    body = client.get("/recommendations", params={"limit": 1000}).json()
    assert body["count"] == len(now) and {i["unique_id"] for i in body["items"]} == set(now["unique_id"])
    days = [i["days_to_order"] for i in body["items"]]
    assert days == sorted(days)
    for cls in ("A", "C"):
        body = client.get("/recommendations", params={"class": cls, "all": True, "limit": 1000}).json()
        assert body["count"] == int((advice["abc"] == cls).sum())
        assert all(i["abc"] == cls for i in body["items"])
    body = client.get("/recommendations", params={"risk": 0.2, "all": True}).json()
    assert body["count"] == int((advice["stockout_prob"] >= 0.2).sum())
    assert all(i["stockout_prob"] >= 0.2 for i in body["items"])
    assert client.get("/recommendations", params={"supplier": "nobody", "all": True}).json()["count"] == 0
    assert client.get("/recommendations", params={"class": "D"}).status_code == 422
    assert client.get("/recommendations", params={"risk": 2}).status_code == 422


def test_request_limits_give_clear_422(client):
    r = client.post("/chat", json={"question": "x" * 501})
    assert r.status_code == 422 and "limited to 500 characters" in r.json()["detail"][0]["msg"]
    r = client.post("/chat/stream", json={"question": "   "})
    assert r.status_code == 422 and "empty" in r.json()["detail"][0]["msg"]
    r = client.post("/chat", json={"question": "hi", "session_id": "../../x"})
    assert r.status_code == 422
    big = json.dumps({"skus": ["85123A"] * 10_000})
    r = client.post("/forecast/items", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "larger than the limit of 65536 bytes" in r.json()["detail"][0]["msg"]


def test_rate_limit_per_key(pipeline_home):
    app = create_app(APISettings(api_key="k1,k2", api_rate_limit=0.5, api_rate_burst=3, api_scheduler=False))
    with TestClient(app) as c:
        codes = [c.get("/recommendations", headers={"X-API-Key": "k1"}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/recommendations", headers={"X-API-Key": "k1"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert c.get("/recommendations", headers={"X-API-Key": "k2"}).status_code == 200  # its own bucket


def test_weekly_reports_are_looked_up_in_the_store(client, book, tmp_path):
    assert client.get("/reports/weekly/latest").status_code == 404
    folder = tmp_path / "reports"
    folder.mkdir()
    rows = []
    for day in ("2011-11-28", "2011-12-05"):
        md, html = folder / f"{day}.md", folder / f"{day}.html"
        md.write_text(f"# Week of {day}\n")
        html.write_text(f"<html><body><h1>Week of {day}</h1></body></html>")
        rows.append(
            {"as_of": day, "markdown_path": str(md), "html_path": str(html), "pdf_path": None, "summary": day}
        )
    book.store.save("weekly_reports", pd.DataFrame(rows), book.run_id)
    latest = client.get("/reports/weekly/latest").json()
    assert latest["as_of"] == "2011-12-05" and latest["markdown"] == "# Week of 2011-12-05\n"
    assert latest["formats"] == ["markdown", "html"]
    r = client.get("/reports/weekly/2011-11-28", params={"format": "html"})
    assert (
        r.status_code == 200
        and "Week of 2011-11-28" in r.text
        and r.headers["content-type"].startswith("text/html")
    )
    assert client.get("/reports/weekly/2011-11-28", params={"format": "pdf"}).status_code == 404
    assert [x["as_of"] for x in client.get("/reports/weekly").json()] == ["2011-11-28", "2011-12-05"]
    assert client.get("/reports/weekly/2011-11-21").status_code == 404
    assert client.get("/reports/weekly/2011-02-30").status_code == 422
    assert client.get("/reports/weekly/..%2F..%2Fetc").status_code in (404, 422)


def test_metrics_count_requests_by_route(client):
    client.get(f"/forecast/item/{SKU}")
    text = client.get("/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("stockpilot_http_requests_total{") and "/forecast/item" in x and 'status="200"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "stockpilot_http_request_seconds_bucket" in text
    assert client.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401


def test_backtest_gate_on_real_metrics(book):
    metrics = book.metrics()
    assert backtest_gate(metrics, metrics, "auto", 0.05)["passed"] == bool(
        metrics.set_index("model").loc["auto", "rmsse"] < metrics.set_index("model").loc["snaive", "rmsse"]
    )
    worse = metrics.assign(rmsse=metrics["rmsse"] * [1.2 if m == "auto" else 1.0 for m in metrics["model"]])
    gate = backtest_gate(worse, metrics, "auto", 0.05)
    assert not gate["passed"] and "worse than the active run" in gate["reasons"][0]
    assert backtest_gate(worse, metrics, "auto", 0.25)["rmsse_new"] == pytest.approx(gate["rmsse_new"])


def test_app_warms_the_assistant_up_at_start():
    from llm.prompts import SYSTEM_PROMPT

    app = create_app(APISettings(api_warm_up=True, api_scheduler=False))
    with TestClient(app) as warm:
        app.state.warm_up.join(timeout=600)
        assistant = app.state.assistant
        assert assistant is not None and assistant.factbook.run_id == active_run_id()
        assert SYSTEM_PROMPT in assistant._writer._prefixes  # the model is loaded, its system turn cached
        warm.headers["X-API-Key"] = app.state.api_keys[0]
        r = warm.post("/chat", json={"question": f"How many {SKU} will we sell next week?"})
        assert r.status_code == 200 and app.state.assistant is assistant  # served by the warmed-up one
    assert not app.state.warm_up.is_alive()


def test_chat_answers_with_facts_and_streams(client):
    r = client.post("/chat", json={"question": f"How many {SKU} will we sell next week?"})
    assert r.status_code == 200
    answer = r.json()
    assert answer["entities"]["skus"] == [SKU]
    facts = {f["name"]: f["value"] for f in answer["facts"]}
    assert "forecast next week" in facts
    assert answer["session_id"] and answer["sources"]
    with client.stream(
        "POST",
        "/chat/stream",
        json={"question": "and should I reorder it?", "session_id": answer["session_id"]},
    ) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        events, kind = [], None
        for line in s.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[0][0] == "token" and events[-1][0] == "answer"
    final = events[-1][1]
    assert final["session_id"] == answer["session_id"] and final["entities"]["skus"] == [SKU]
    if not final.get("replaced_stream"):
        streamed = "".join(d["text"] for k, d in events if k == "token").strip()
        assert final["answer"].startswith(streamed)


def test_retrain_job_activates_only_a_passing_run(client, book):
    before = active_run_id()
    r = client.post("/retrain")
    assert r.status_code == 202
    job = r.json()
    assert client.post("/retrain").json()["id"] == job["id"]  # one at a time
    deadline = time.monotonic() + 600
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(2)
        job = client.get(f"/jobs/{job['id']}").json()
    assert job["status"] in ("succeeded", "rejected"), job
    checks = job["checks"]
    assert checks["rmsse_active"] == pytest.approx(book.metrics().set_index("model").loc["auto", "rmsse"])
    new_metrics = ResultsStore().load("backtest_metrics", job["new_run_id"]).set_index("model")
    assert checks["rmsse_new"] == pytest.approx(new_metrics.loc["auto", "rmsse"])
    passed = (
        checks["rmsse_new"] <= checks["rmsse_active"] * 1.05 and checks["rmsse_new"] < checks["rmsse_snaive"]
    )
    assert checks["passed"] == passed
    if passed:
        assert job["status"] == "succeeded" and active_run_id() == job["new_run_id"]
        assert job["previous_run_id"] == before
        assert client.get("/health").json()["run_id"] == job["new_run_id"]
    else:
        assert job["status"] == "rejected" and active_run_id() == before
    assert client.get("/jobs/000000000000").status_code == 404
    assert client.get("/jobs/not-a-job").status_code == 422
