"""Knowledge-base documents from pipeline runs on real data, and incremental, atomic index updates with the
real embedding model: stable ids, metadata, numbers equal to the FactBook's, only changed SKUs re-embedded."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import rag.index as rag_index
from api.cli import app
from forecasting.data import to_long
from forecasting.demo import demo_demand
from forecasting.errors import InputError
from forecasting.factbook import FactBook
from forecasting.pipeline import attributes_from, run_pipeline
from forecasting.store import ResultsStore
from llm.facts import Fact, format_fact
from rag.documents import load_policies, parse_id
from rag.embeddings import get_embedder
from rag.factsheets import build_documents
from rag.index import HybridIndex
from rag.knowledge import get_retriever, update_index

runner = CliRunner()
FAST = {"model": "sba", "baselines": ("ma",)}
CHANGED = ("22086", "84879", "23084")


@pytest.fixture(scope="module")
def demo():
    """30 real best-selling demo SKUs (85123A among them), weekly."""
    demand, _report, freq, descriptions = demo_demand()
    top = demand.groupby("unique_id")["y"].sum().nlargest(30).index
    return demand[demand["unique_id"].isin(top)].reset_index(drop=True), freq, descriptions


def test_documents_have_stable_ids_metadata_and_the_factbook_numbers(demo):
    demand, freq, descriptions = demo
    run = run_pipeline(demand, freq, 4, descriptions=descriptions, dataset="demo", **FAST)
    book = FactBook.from_store()
    docs = build_documents(book)
    by_id = {d.id: d for d in docs}
    assert len(by_id) == len(docs)
    assert {f"sku:{s}" for s in book.skus} <= set(by_id)
    policy_ids = {d.id for d in load_policies()}
    assert policy_ids <= set(by_id) and all(parse_id(i)[2] for i in policy_ids)
    doc = by_id["sku:85123A"]
    assert doc.metadata["type"] == "sku" and doc.metadata["sku"] == "85123A"
    assert doc.metadata["run_id"] == run.run_id and doc.metadata["date"] == "2011-12-05"
    assert run.run_id not in doc.text  # texts change only when facts do
    assert doc.text.startswith(f"SKU 85123A: {descriptions['85123A']}")
    for f in book.sku_facts("85123A"):
        if f["name"] in ("reorder point", "safety stock", "EOQ", "order by", "forecast next 4 weeks"):
            assert "- " + format_fact(Fact(f["name"], f["value"], f["unit"])) in doc.text.splitlines()
    # a second build of the same run gives the same ids and texts
    again = {d.id: d.text for d in build_documents(FactBook.from_store())}
    assert again == {d.id: d.text for d in docs}


def test_category_store_supplier_and_weekly_report_documents(m5_small, data_dir, tmp_path):
    from forecasting.inventory.leadtime import po_lead_times

    d = m5_small[m5_small["date"] > "2015-09-01"]
    long, _, freq = to_long(d, ["store_id", "item_id"], "date", "value", ["sell_price"], "D")
    po = pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    lead_times = po_lead_times(po, "VendorNumber", "PODate", ["InvoiceDate"])
    run = run_pipeline(
        long, freq, 7, attributes=attributes_from(d, ["store_id", "item_id"]), lead_times=lead_times, **FAST
    )
    report = tmp_path / "weekly-2016-03-21.md"
    report.write_text("# Weekly report\n\nTop risk: CA_1/FOODS_3_080.\n", encoding="utf-8")
    table = pd.DataFrame(
        {"as_of": [pd.Timestamp("2016-03-21")], "markdown_path": [str(report)], "summary": ["s"]}
    )
    ResultsStore().save("weekly_reports", table, "report-run-1")
    book = FactBook.from_store()
    by_id = {doc.id: doc for doc in build_documents(book)}
    stores = sorted(d["store_id"].unique())
    assert {f"store:{s}" for s in stores} <= set(by_id)
    assert {f"category:{c}" for c in d["cat_id"].unique()} <= set(by_id)
    sheet = by_id[f"store:{stores[0]}"]
    n_skus = d[d["store_id"] == stores[0]]["item_id"].nunique()
    assert f"- SKUs: {n_skus}" in sheet.text and sheet.metadata["store"] == stores[0]
    sku = book.skus_with("store", stores[0])[0]
    meta = by_id[f"sku:{sku}"].metadata
    assert meta["store"] == stores[0] and meta["item"] == sku.split("/")[1] and meta["category"]
    vendor = book.suppliers()[0]
    supplier = by_id[f"supplier:{vendor}"]
    mean = next(f for f in book.supplier_facts(vendor) if f["name"] == "mean lead time")
    assert "- " + format_fact(Fact(mean["name"], mean["value"], mean["unit"])) in supplier.text
    assert supplier.metadata["supplier"] == vendor and supplier.metadata["run_id"] == run.run_id
    weekly = by_id["report:weekly:2016-03-21"]
    assert "CA_1/FOODS_3_080" in weekly.text
    assert weekly.metadata["date"] == "2016-03-21" and weekly.metadata["run_id"] == "report-run-1"


def test_index_update_embeds_only_changed_skus_and_saves_atomically(demo, tmp_path, monkeypatch):
    demand, freq, descriptions = demo
    folder = tmp_path / "index"
    embedder = get_embedder()
    skus = pd.Index(sorted(demand["unique_id"].unique()), name="unique_id")
    stock = pd.DataFrame({"on_hand": 500.0}, index=skus)
    common = {"descriptions": descriptions, "dataset": "demo", "stock": stock, **FAST}
    for _ in range(2):  # the second run has forecast changes (all stable) like every later one
        run_pipeline(demand, freq, 4, **common)
    first = update_index(folder=folder, embedder=embedder)
    assert first["added"] == first["documents"] == first["embedded"] > 30
    before = {d.id: d.text for d in build_documents(FactBook.from_store())}
    # the stock count of three SKUs changes: only their facts change
    counted = stock.copy()
    counted.loc[list(CHANGED), "on_hand"] = 0.0
    run = run_pipeline(demand, freq, 4, **{**common, "stock": counted})
    after = {d.id: d.text for d in build_documents(FactBook.from_store())}
    changed = {i for i in after if after[i] != before.get(i)}
    assert changed == {f"sku:{s}" for s in CHANGED}
    texts_before = embedder.n_texts
    second = update_index(folder=folder, embedder=embedder)
    assert second["run_id"] == run.run_id
    assert (second["updated"], second["embedded"], second["added"], second["removed"]) == (3, 3, 0, 0)
    assert embedder.n_texts - texts_before == 3
    assert second["unchanged"] + second["metadata_only"] == first["documents"] - 3
    files = sorted(p.name for p in folder.iterdir())
    assert "manifest.json" in files and not [f for f in files if f.endswith(".tmp")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"].values()) == sorted(
        f for f in files if f not in ("manifest.json", ".lock")
    )
    index = HybridIndex.load(folder, embedder)
    assert index.get("sku:22086").text == after["sku:22086"]
    assert "- on hand: 0 units" in after["sku:22086"]
    assert index.get("sku:22086").metadata["run_id"] == run.run_id
    docs = get_retriever(k=3, index=index).invoke("reorder point of 85123A")
    assert docs[0].id == "sku:85123A"
    # a SKU's dense vector stands for its heading: its product name finds it by meaning alone
    name = descriptions["85123A"].lower()
    assert index.search(name, k=1, mode="dense")[0].doc.id == "sku:85123A"
    # a save that fails half-way leaves the previous index readable
    run_pipeline(demand, freq, 4, **common)
    calls = {"n": 0}
    real = rag_index.atomic_write_bytes

    def disk_full(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(path, data)

    monkeypatch.setattr(rag_index, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError, match="disk full"):
        update_index(folder=folder, embedder=embedder)
    monkeypatch.undo()
    kept = HybridIndex.load(folder, embedder)
    assert kept.get("sku:22086").text == after["sku:22086"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cli_index_json_and_missing_index(demo):
    with pytest.raises(InputError, match="stockpilot index"):
        get_retriever()
    empty = runner.invoke(app, ["index"])
    assert empty.exit_code == 2 and "no pipeline results yet" in empty.stderr
    demand, freq, descriptions = demo
    small = demand[demand["unique_id"].isin(sorted(demand["unique_id"].unique())[:5])]
    run_pipeline(small, freq, 4, descriptions=descriptions, dataset="demo", **FAST)
    result = runner.invoke(app, ["index", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["by_type"]["sku"] == 5 and out["added"] == out["documents"]
    assert get_retriever(k=2).invoke("approval limits")[0].metadata["type"] == "policy"
