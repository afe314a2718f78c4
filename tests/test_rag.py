"""Retrieval layer: ids, BM25 against rank-bm25, hybrid search on the real embedding model, incremental
updates, crash-safe saves, the LangChain retriever.

The knowledge base here is built from real data: product descriptions and quantities from Online Retail,
item/store series from M5, supplier lead times from the Bibitor purchase orders, and the handbook pages in
docs/policies/. It holds ~75 documents so the whole file embeds in seconds on a busy CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from langchain_core.documents import Document
from rank_bm25 import BM25Okapi

import rag.index as rag_index
from forecasting.errors import InputError
from rag.documents import KBDocument, load_policies, make_document, make_id, parse_id
from rag.embeddings import get_embedder
from rag.index import HybridIndex, IndexConfig
from rag.lexical import BM25Postings, code_tokens, tokenize
from rag.retriever import KnowledgeRetriever

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- real-data corpus


@pytest.fixture(scope="module")
def retail() -> pd.DataFrame:
    d = pd.read_parquet(DATA / "online_retail" / "online_retail.parquet")
    d = d[d["Quantity"] > 0].dropna(subset=["Description"])
    return d.assign(InvoiceDate=pd.to_datetime(d["InvoiceDate"]))


def sku_sheets(retail: pd.DataFrame, n: int = 40) -> list[KBDocument]:
    """Fact sheets for the n best-selling Online Retail SKUs (85123A is among them), numbers from the data,
    plus 84534B and 84534b: two real stock codes differing only in case, with the same description."""
    g = retail.groupby("StockCode").agg(
        desc=("Description", "first"), units=("Quantity", "sum"), price=("UnitPrice", "median")
    )
    top = pd.concat([g.sort_values("units", ascending=False).head(n), g.loc[["84534B", "84534b"]]])
    docs = []
    for code, row in top.iterrows():
        weekly = row.units / 53
        docs.append(
            make_document(
                "sku",
                code,
                f"SKU {code}: {row.desc.strip().title()}. Average demand {weekly:.0f} units a week at a "
                f"median unit price of {row.price:.2f} GBP. Reorder point {weekly * 2.5:.0f} units.",
                run_id="test-run-1",
                title=row.desc.strip(),
            )
        )
    return docs


def m5_sheets() -> list[KBDocument]:
    d = pd.read_csv(DATA / "m5" / "m5_sales_long.csv.gz", usecols=["item_id", "store_id", "cat_id", "value"])
    d = d[
        d["item_id"].isin(["FOODS_3_080", "FOODS_3_377", "HOBBIES_1_115"])
        & d["store_id"].isin(["CA_1", "TX_1"])
    ]
    docs = []
    for (item, store), g in d.groupby(["item_id", "store_id"]):
        docs.append(
            make_document(
                "sku",
                f"{item}/{store}",
                f"Series {item}/{store}: item {item} in store {store}, category {g.cat_id.iloc[0]}. "
                f"Mean daily sales {g.value.mean():.2f} units; {100 * (g.value == 0).mean():.0f}% of days "
                "without a sale.",
                item=item,
                store=store,
                category=g.cat_id.iloc[0],
            )
        )
    return docs


def supplier_sheets(vendors: tuple[int, ...] = (4466, 105, 480, 1392, 2)) -> list[KBDocument]:
    po = pd.read_csv(DATA / "bibitor" / "InvoicePurchases12312016.csv", parse_dates=["PODate", "InvoiceDate"])
    po = po[po["VendorNumber"].isin(vendors)]
    docs = []
    for vendor, g in po.groupby("VendorNumber"):
        lead = (g["InvoiceDate"] - g["PODate"]).dt.days
        name = g.VendorName.iloc[0].strip()
        text = (
            f"Supplier {vendor} ({name.title()}): {len(g)} purchase orders; lead time from order to invoice "
            f"{lead.mean():.1f} days on average, standard deviation {lead.std():.1f}."
        )
        docs.append(make_document("supplier", vendor, text, name=name))
    return docs


def weekly_report(retail: pd.DataFrame, week_start: str = "2011-12-05") -> KBDocument:
    start = pd.Timestamp(week_start)
    w = retail[(retail["InvoiceDate"] >= start) & (retail["InvoiceDate"] < start + pd.Timedelta(days=7))]
    top = w.groupby("StockCode")["Quantity"].sum().sort_values(ascending=False).head(3)
    lines = ", ".join(f"{code} ({units} units)" for code, units in top.items())
    return make_document(
        "report",
        week_start,
        f"Weekly report for the week of {week_start}: {w['InvoiceNo'].nunique()} invoices. "
        f"Best sellers: {lines}.",
    )


@pytest.fixture(scope="module")
def corpus(retail) -> list[KBDocument]:
    return load_policies() + sku_sheets(retail) + m5_sheets() + supplier_sheets() + [weekly_report(retail)]


@pytest.fixture(scope="module")
def kb(corpus) -> HybridIndex:
    index = HybridIndex(get_embedder())
    index.upsert(corpus)
    return index


# ---------------------------------------------------------------- documents and ids


def test_ids_metadata_and_hashes():
    assert make_id("sku", "85123A") == "sku:85123A"
    assert (
        make_id("policy", "service-levels", "Targets by ABC class")
        == "policy:service-levels#targets-by-abc-class"
    )
    assert parse_id("sku:FOODS_3_080/CA_1") == ("sku", "FOODS_3_080/CA_1", None)
    for bad in ("85123A", "SKU:1", "sku:", "sku:a b"):
        with pytest.raises(InputError):
            parse_id(bad)
    doc = make_document(
        "supplier", 4466, "Supplier 4466 ships in 8 days.", run_id="r1", date=pd.Timestamp("2011-12-05")
    )
    assert doc.metadata == {
        "type": "supplier",
        "supplier": "4466",
        "run_id": "r1",
        "date": "2011-12-05T00:00:00",
    }
    same_text = KBDocument(doc.id, doc.text, {"type": "supplier", "run_id": "r2"})
    assert same_text.content_hash == doc.content_hash
    assert KBDocument(doc.id, doc.text + " Late twice.").content_hash != doc.content_hash


def test_policy_handbook_loads_as_sections():
    docs = load_policies()
    ids = [d.id for d in docs]
    assert len(ids) == len(set(ids)) >= 10
    pages = {d.metadata["page"] for d in docs}
    assert {"policy:service-levels", "policy:approval-limits", "policy:forecast-intervals"} <= pages
    targets = next(d for d in docs if d.id == "policy:service-levels#targets-by-abc-class")
    assert "98%" in targets.text and "95%" in targets.text and "90%" in targets.text
    assert targets.text.startswith("Service levels by ABC class - Targets by ABC class")
    assert all(d.metadata["type"] == "policy" and d.metadata["source"].endswith(".md") for d in docs)


def test_tokens_keep_codes_whole_and_split():
    toks = tokenize("Reorder FOODS_3_080/CA_1 and 85123A, the T-Light holder")
    assert {"foods_3_080/ca_1", "foods_3_080", "ca_1", "foods", "080", "85123a", "t-light", "light"} <= set(
        toks
    )
    assert "the" not in toks and "and" not in toks
    assert code_tokens("supplier 2 is late", keep_case=True) == ["2"]
    assert code_tokens("Forecast 84534B/ST_04", keep_case=True) == ["84534B/ST_04", "84534B", "ST_04"]
    assert code_tokens("lead time 14 days for supplier 4466 on 2011-12-05, sku 85123A in CA_1") == [
        "4466",
        "85123a",
        "ca_1",
    ]


# ---------------------------------------------------------------- BM25 equals rank-bm25, also after updates


def test_bm25_scores_equal_rank_bm25_including_incremental_updates(retail):
    texts = retail["Description"].drop_duplicates().head(300).tolist()
    lex = BM25Postings(merge_at=50)  # small merge threshold: packed arrays and delta both in play
    alive = np.zeros(400, dtype=bool)
    for slot, text in enumerate(texts):
        lex.add(slot, tokenize(text))
        alive[slot] = True
        lex.maybe_merge(alive)
    # remove 40 documents and re-add 5 changed ones in new slots, as the index does
    for slot in range(0, 200, 5):
        lex.remove(slot, tokenize(texts[slot]))
        alive[slot] = False
    changed = {300 + i: texts[5 * i] + " gift set" for i in range(5)}
    for slot, text in changed.items():
        lex.add(slot, tokenize(text))
        alive[slot] = True
    live = {s: t for s, t in enumerate(texts) if alive[s]} | changed
    slots = sorted(live)
    reference = BM25Okapi([tokenize(live[s]) for s in slots])
    for query in ["white hanging heart t-light holder", "jumbo bag red retrospot", "gift set", "lunch box"]:
        expected = reference.get_scores(tokenize(query))
        got_slots, got = lex.scores(tokenize(query), alive)
        ours = dict(zip(got_slots.tolist(), got.tolist(), strict=True))
        np.testing.assert_allclose([ours.get(s, 0.0) for s in slots], expected, rtol=1e-9, atol=1e-9)
        assert expected.max() > 0


# ---------------------------------------------------------------- hybrid search on the real model


def test_exact_code_ranks_the_right_document_first(kb, corpus):
    sku_codes = [d.metadata["sku"] for d in corpus if d.metadata["type"] == "sku" and "/" not in d.id][:15]
    assert "85123A" in sku_codes
    for code in sku_codes:
        hits = kb.search(f"what is the reorder point for {code}?", k=3)
        assert hits[0].doc.id == f"sku:{code}", (code, [h.doc.id for h in hits])
        assert code.lower() in hits[0].codes and hits[0].code_rank == 1
    hits = kb.search("forecast for FOODS_3_080/CA_1", k=3)
    assert hits[0].doc.id == "sku:FOODS_3_080/CA_1"
    hits = kb.search("how is FOODS_3_080 selling in TX_1", k=3)
    assert hits[0].doc.id == "sku:FOODS_3_080/TX_1"
    assert kb.search("lead time of supplier 4466", k=1)[0].doc.id == "supplier:4466"
    assert kb.search("lead time of supplier 2", k=1)[0].doc.id == "supplier:2"  # short code after a cue word
    assert kb.search("84534b stock", k=1)[0].doc.id == "sku:84534b"  # exact case wins the tie
    assert kb.search("84534B stock", k=1)[0].doc.id == "sku:84534B"
    # dense alone does not know codes; the fused ranking does
    dense_top = kb.search("85123A", k=1, mode="dense")[0].doc.id
    assert kb.search("85123A", k=1)[0].doc.id == "sku:85123A"
    assert dense_top in kb  # (whatever it is, it is a real document)


def test_meaning_finds_policy_sections(kb):
    hits = kb.search("who has to sign off a purchase order worth 60,000 pounds?", k=3)
    assert hits[0].doc.id == "policy:approval-limits#approval-limits"
    hits = kb.search("which service level do class A items get?", k=3)
    assert "policy:service-levels#targets-by-abc-class" in [h.doc.id for h in hits]
    hits = kb.search("is it worth paying for air freight when a supplier is late?", k=3)
    assert hits[0].doc.metadata["page"] == "policy:expediting"
    top = hits[0]
    assert top.score > 0 and -1 <= top.dense_score <= 1 and top.lexical_score >= 0
    doc, score = top  # unpacks as (doc, score)
    assert doc is top.doc and score == top.score


def test_filters_on_metadata(kb):
    hits = kb.search("reorder point", k=5, filters={"type": "policy"})
    assert hits and all(h.doc.metadata["type"] == "policy" for h in hits)
    hits = kb.search("sales", k=10, filters={"store": "tx_1"})
    assert hits and all(h.doc.metadata["store"] == "TX_1" for h in hits)
    hits = kb.search("lead time", k=10, filters={"type": ["supplier", "report"]})
    assert {h.doc.metadata["type"] for h in hits} <= {"supplier", "report"} and len(hits) == 6
    assert kb.search("anything", k=3, filters={"type": "no-such-type"}) == []


def test_retriever_returns_langchain_documents(kb):
    retriever = KnowledgeRetriever(index=kb, k=3)
    docs = retriever.invoke("reorder point of 85123A")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    assert docs[0].id == "sku:85123A" and docs[0].metadata["doc_id"] == "sku:85123A"
    assert docs[0].metadata["sku"] == "85123A" and docs[0].metadata["run_id"] == "test-run-1"
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert {"dense_score", "lexical_score", "dense_rank", "lexical_rank", "code_rank"} <= set(
        docs[0].metadata
    )
    one = retriever.invoke("approval limits", k=1, filters={"type": "policy"})
    assert len(one) == 1 and one[0].metadata["type"] == "policy"
    batch = retriever.batch(["safety stock formula", "weekly report 2011-12-05"])
    assert batch[1][0].id == "report:2011-12-05"


# ---------------------------------------------------------------- incremental updates and persistence


def test_incremental_update_embeds_only_changed_docs(kb, corpus, tmp_path):
    folder = kb.save(tmp_path / "index")
    index = HybridIndex.load(folder, embedder=kb.embedder)
    assert index.size == kb.size == len(corpus)
    before = index.embedder.n_texts
    skus = [d for d in corpus if d.metadata["type"] == "sku"]
    changed = [
        KBDocument(skus[0].id, skus[0].text + " Discontinued: replaced by 99999Z.", skus[0].metadata),
        KBDocument(skus[1].id, skus[1].text.replace("Reorder point", "Order-up-to level"), skus[1].metadata),
    ]
    meta_only = KBDocument(skus[2].id, skus[2].text, {**skus[2].metadata, "run_id": "test-run-2"})
    new = make_document(
        "sku", "84029E", "SKU 84029E: Red Woolly Hottie White Heart. Sells October to January."
    )
    gone = skus[3].id
    unchanged = [d for d in skus[4:]]
    stats = index.sync(changed + [meta_only, new] + unchanged, scope={"type": "sku"})
    assert (stats.added, stats.updated, stats.metadata_only, stats.removed) == (1, 2, 1, 1)
    assert stats.embedded == 3 and index.embedder.n_texts - before == 3  # only new + changed texts
    assert stats.unchanged == len(unchanged)
    assert index.size == len(corpus)  # +1 new, -1 removed; policies etc. untouched by the scoped sync
    assert gone not in index and index.search(gone.split(":")[1], k=3)[0].doc.id != gone
    assert index.get(meta_only.id).metadata["run_id"] == "test-run-2"
    assert index.content_hash(changed[0].id) == changed[0].content_hash != skus[0].content_hash
    assert index.search("which product replaced by 99999Z", k=1)[0].doc.id == skus[0].id
    assert index.search("test-run-2", k=5, filters={"run_id": "test-run-2"})[0].doc.id == meta_only.id
    # a save/load round trip returns the same results, with no re-embedding
    index.save(folder)
    again = HybridIndex.load(folder, embedder=kb.embedder)
    queries = {
        q: kb.embedder.encode_query(q) for q in ["99999Z", "red woolly hottie", "service level class B"]
    }
    n = again.embedder.n_texts
    for q, qv in queries.items():
        a = [(h.doc.id, round(h.score, 9)) for h in index.search(q, k=5, query_vector=qv)]
        b = [(h.doc.id, round(h.score, 9)) for h in again.search(q, k=5, query_vector=qv)]
        assert a == b
    assert again.embedder.n_texts == n


def test_failed_save_leaves_the_old_index_readable(kb, tmp_path, monkeypatch):
    folder = kb.save(tmp_path / "index")
    old_manifest = (folder / "manifest.json").read_text()
    old_files = sorted(p.name for p in folder.iterdir())
    index = HybridIndex.load(folder, embedder=kb.embedder)
    index.remove(["sku:85123A"])

    real_write = rag_index.atomic_write_bytes
    calls = []

    def disk_full_on_second_file(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(rag_index, "atomic_write_bytes", disk_full_on_second_file)
    with pytest.raises(OSError, match="No space"):
        index.save(folder)
    monkeypatch.undo()
    assert (folder / "manifest.json").read_text() == old_manifest
    assert sorted(p.name for p in folder.iterdir()) == old_files  # the half-written generation was removed
    reloaded = HybridIndex.load(folder, embedder=kb.embedder)
    assert "sku:85123A" in reloaded and reloaded.size == kb.size
    assert reloaded.search("85123A", k=1)[0].doc.id == "sku:85123A"


def test_crash_mid_save_keeps_old_index_and_next_save_cleans_up(kb, tmp_path):
    folder = kb.save(tmp_path / "index")
    # a separate process loads the index (no model needed), changes it and dies hard halfway through saving
    script = textwrap.dedent(
        f"""
        import os
        import rag.index as m
        from rag.index import HybridIndex
        index = HybridIndex.load({str(folder)!r})
        index.remove(["sku:85123A"])
        real, n = m.atomic_write_bytes, [0]
        def crash(path, data):
            n[0] += 1
            if n[0] == 3:
                os._exit(9)
            return real(path, data)
        m.atomic_write_bytes = crash
        index.save({str(folder)!r})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 9, proc.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    leftovers = [p.name for p in folder.iterdir() if p.name not in manifest["files"].values()]
    assert any(name.startswith(("docs-", "dense-")) for name in leftovers)  # the crash left orphans
    reloaded = HybridIndex.load(folder, embedder=kb.embedder)
    assert "sku:85123A" in reloaded and reloaded.size == kb.size
    reloaded.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".lock", "manifest.json", *manifest["files"].values()]
    )


def test_ivf_switch_update_and_reload_without_reembedding(retail, tmp_path):
    """Index mechanics at a size that switches to IVF, with vectors passed in (no model calls)."""
    texts = retail["Description"].drop_duplicates().head(1200).tolist()
    docs = [
        make_document("sku", f"T{i:05d}", f"SKU T{i:05d}: {t}", store=f"S_{i % 7}")
        for i, t in enumerate(texts)
    ]
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(docs), 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cfg = IndexConfig(ivf_min_size=1000, nprobe=1000)  # nprobe >= nlist: IVF search is exact
    index = HybridIndex(config=cfg)
    index.upsert(docs[:900], vectors=vecs[:900])
    assert index.dense_kind == "flat"
    index.upsert(docs[900:], vectors=vecs[900:])
    assert index.dense_kind == "ivf" and index.size == 1200
    q = vecs[17] + 0.05 * vecs[500]
    q /= np.linalg.norm(q)
    exact = np.argsort(-(vecs @ q))[:5]
    hits = index.search("x", k=5, mode="dense", query_vector=q)
    assert [h.doc.id for h in hits] == [docs[i].id for i in exact]
    index.remove([docs[17].id])
    assert index.search("x", k=1, mode="dense", query_vector=q)[0].doc.id != docs[17].id
    # filtered dense search, each path against brute force: exact scoring of few docs, FAISS selector,
    # over-fetch + post-filter for broad filters
    live = np.array([d.id in index for d in docs])
    for max_exact, stores in ((4096, ["S_3"]), (10, ["S_3"]), (10, [f"S_{i}" for i in range(6)])):
        index.config.exact_filter_max = max_exact
        ok = live & np.array([d.metadata["store"] in stores for d in docs])
        expected = [docs[i].id for i in np.flatnonzero(ok)[np.argsort(-(vecs[ok] @ q))][:4]]
        hits = index.search("x", k=4, mode="dense", query_vector=q, filters={"store": stores})
        assert [h.doc.id for h in hits] == expected
    before = [h.doc.id for h in index.search("x", k=5, mode="dense", query_vector=q)]
    index.retrain_dense()  # re-cluster over the live vectors: same exact results at nprobe >= nlist
    assert [h.doc.id for h in index.search("x", k=5, mode="dense", query_vector=q)] == before
    index.save(tmp_path / "ivf")
    again = HybridIndex.load(tmp_path / "ivf")
    assert again.dense_kind == "ivf" and again.size == 1199
    assert [h.doc.id for h in again.search("x", k=5, mode="dense", query_vector=q)] == [
        h.doc.id for h in index.search("x", k=5, mode="dense", query_vector=q)
    ]
    code_hit = again.search(f"what about T{1100:05d}", k=1, query_vector=q)[0]
    assert code_hit.doc.id == "sku:T01100"


def test_code_rules_exact_beats_partial_and_mention():
    """Code matching alone (the dense vectors are placeholders, passed in): exact metadata > '/' part >
    mention in text, exact case breaks ties, and a code only mentioned still ranks its document."""
    sheets = [
        make_document(
            "sku", f"{c}/{st}", f"{c}/{st}: Fairy Cake Notebook A5 Size at store {st}.", item=c, store=st
        )
        for c in ("84534B", "84534b")
        for st in ("ST_04", "ST_05")
    ]
    report = make_document("report", "2011-12-05", "Weekly report: 84534B/ST_05 sold out on Tuesday.")
    docs = [*sheets, report]
    vecs = np.eye(len(docs), 384, dtype=np.float32)
    index = HybridIndex(config=IndexConfig(ivf_min_size=None))
    index.upsert(docs, vectors=vecs)
    q = vecs[-1]  # the query vector points at the report: codes must still win
    assert index.search("forecast for 84534B/ST_04", k=1, query_vector=q)[0].doc.id == "sku:84534B/ST_04"
    assert index.search("forecast for 84534b/ST_04", k=1, query_vector=q)[0].doc.id == "sku:84534b/ST_04"
    top = index.search("84534B/ST_05", k=3, query_vector=q)
    assert [h.doc.id for h in top[:2]] == ["sku:84534B/ST_05", "sku:84534b/ST_05"]
    assert "report:2011-12-05" in [h.doc.id for h in index.search("84534B/ST_05", k=4, query_vector=q)]
    assert index.search("what sold out in 2011-12-05", k=1, query_vector=q)[0].doc.id == "report:2011-12-05"
