"""Benchmark the hybrid retrieval index at 100,000 chunks: build time, memory, search latency, sanity hits.

    .venv/bin/python benchmarks/bench_rag.py                     # 100k chunks, 200 queries
    .venv/bin/python benchmarks/bench_rag.py --chunks 20000 --queries 50 --no-flat   # a quick look
    .venv/bin/python benchmarks/bench_rag.py --embed-all         # embed every chunk text (slow on CPU)

Corpus (synthetic-from-real): every real Online Retail SKU (stock code + description + its real yearly
units) x synthetic store codes ST_01.. gives item/store fact sheets with numbers derived from the real
quantities and a real Bibitor supplier (with its measured lead time); plus one lead-time sheet per real
Bibitor supplier, one weekly report per real Online Retail week, and the policy handbook.

Dense vectors: by default each real description and each store phrase is embedded with the real
all-MiniLM-L6-v2 model (cached under <STOCKPILOT_HOME>/bench/), and a fact sheet's vector is the normalized
sum description + 0.35 x store: distinct, clustered like real per-store sheets, at a fraction of the cost.
Embedding all 100k texts on 2 busy CPU cores takes about an hour; the model's measured throughput on real
fact-sheet texts is printed, and --embed-all does it for real. Search cost does not depend on how the
vectors were made (flat: every vector is scored; IVF: the probed lists are).

Latency is reported three ways: query embedding alone (1 torch thread), retrieval alone (dense + BM25 +
code match, fused; query vector given) and end to end (embedding included). The machine's load average is
printed: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from rag.documents import KBDocument, load_policies, make_document  # noqa: E402
from rag.embeddings import get_embedder  # noqa: E402
from rag.index import HybridIndex, IndexConfig  # noqa: E402

POLICY_QUERIES = [
    ("who approves a purchase order of 40,000 pounds?", "policy:approval-limits"),
    ("service level target for class A items", "policy:service-levels"),
    ("how do I read the 90% forecast interval", "policy:forecast-intervals"),
    ("should we pay for air freight when the supplier is late", "policy:expediting"),
    ("how is safety stock calculated", "policy:safety-stock"),
    ("formula for the reorder point", "policy:safety-stock"),
    ("can I split an order to stay under the approval limit", "policy:approval-limits"),
    ("what does yhat_upper mean", "policy:forecast-intervals"),
]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def load_sources() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Real SKUs (code, description, yearly units), real suppliers (lead times), real weekly sales."""
    d = pd.read_parquet(DATA / "online_retail" / "online_retail.parquet")
    d = d[(d["Quantity"] > 0) & d["Description"].notna()]
    d = d[d["StockCode"].astype(str).str.contains(r"\d")]
    skus = d.groupby("StockCode").agg(desc=("Description", "first"), units=("Quantity", "sum")).reset_index()
    skus["desc"] = skus["desc"].str.strip()
    po = pd.read_csv(DATA / "bibitor" / "InvoicePurchases12312016.csv", parse_dates=["PODate", "InvoiceDate"])
    po["lead"] = (po["InvoiceDate"] - po["PODate"]).dt.days
    vendors = po.groupby("VendorNumber").agg(
        name=("VendorName", "first"),
        lead=("lead", "mean"),
        lead_sd=("lead", "std"),
        pos=("PONumber", "count"),
    )
    vendors["name"] = vendors["name"].str.strip()
    d = d.assign(week=pd.to_datetime(d["InvoiceDate"]).dt.to_period("W-SUN").dt.start_time)
    return skus, vendors.reset_index(), d


def build_corpus(
    n_chunks: int, seed: int = 7
) -> tuple[list[KBDocument], np.ndarray, np.ndarray, pd.DataFrame]:
    """(docs, sku row per doc (-1: not a fact sheet), store index per doc, skus)."""
    skus, vendors, sales = load_sources()
    rng = np.random.default_rng(seed)
    extra: list[KBDocument] = load_policies()
    for v in vendors.itertuples():
        extra.append(
            make_document(
                "supplier",
                v.VendorNumber,
                f"Supplier {v.VendorNumber} ({v.name.title()}): {v.pos} purchase orders in 2016; lead time "
                f"from order to invoice {v.lead:.1f} days on average (standard deviation {v.lead_sd:.1f}).",
                name=v.name,
            )
        )
    for week, g in sales.groupby("week"):
        top = g.groupby("Description")["Quantity"].sum().sort_values(ascending=False).head(5)
        day = week.date().isoformat()
        extra.append(
            make_document(
                "report",
                day,
                f"Weekly report for the week of {day}: {g['InvoiceNo'].nunique()} invoices, "
                f"{int(g['Quantity'].sum())} units. Best sellers: "
                + "; ".join(f"{k.strip().title()} ({v} units)" for k, v in top.items()),
            )
        )
    n_sheets = max(n_chunks - len(extra), 0)
    n_stores = int(np.ceil(n_sheets / len(skus)))
    docs: list[KBDocument] = []
    sku_row = np.full(n_sheets, -1, dtype=np.int64)
    store_of = np.full(n_sheets, -1, dtype=np.int64)
    vendor_of = rng.integers(0, len(vendors), size=len(skus))
    i = 0
    for s in range(n_stores):
        store = f"ST_{s + 1:02d}"
        share = rng.uniform(0.3, 1.7, size=len(skus)) / n_stores
        for r, row in enumerate(skus.itertuples()):
            if i == n_sheets:
                break
            weekly = row.units / 53 * share[r]
            v = vendors.iloc[vendor_of[r]]
            lead = max(v.lead, 1.0)
            ss = 1.65 * np.sqrt(lead / 7) * 0.6 * weekly + 1
            text = (
                f"{row.StockCode}/{store}: {row.desc.title()} at store {store}. Average weekly demand "
                f"{weekly:.0f} units (90% interval {0.4 * weekly:.0f}-{1.8 * weekly + 2:.0f}). Safety stock "
                f"{ss:.0f} units, reorder point {weekly * lead / 7 + ss:.0f} units. Supplier "
                f"{v.VendorNumber} ({v['name'].title()}), lead time {lead:.0f} days."
            )
            docs.append(
                make_document(
                    "sku",
                    f"{row.StockCode}/{store}",
                    text,
                    item=str(row.StockCode),
                    store=store,
                    supplier=str(v.VendorNumber),
                    run_id="bench",
                )
            )
            sku_row[i], store_of[i] = r, s
            i += 1
    docs += extra
    sku_row = np.concatenate([sku_row, np.full(len(extra), -1)])
    store_of = np.concatenate([store_of, np.full(len(extra), -1)])
    return docs, sku_row, store_of, skus


def cached_encode(texts: list[str], tag: str) -> np.ndarray:
    """Encode with the real model, cached on disk by the texts' hash."""
    from forecasting.settings import get_settings

    key = hashlib.blake2b("\n".join(texts).encode(), digest_size=12).hexdigest()
    path = get_settings().home / "bench" / f"{tag}-{key}.npy"
    if path.exists():
        return np.load(path)
    vecs = get_embedder().encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def make_queries(n: int, docs: list[KBDocument], seed: int = 11) -> list[tuple[str, str, str]]:
    """(query, kind, expected) with kind code|store_code|words|policy|supplier."""
    rng = np.random.default_rng(seed)
    sheets = [d for d in docs if d.metadata["type"] == "sku"]
    suppliers = [d.metadata["supplier"] for d in docs if d.metadata["type"] == "supplier"]
    out: list[tuple[str, str, str]] = []
    code_templates = [
        "what is the reorder point for {}?",
        "{} stock position",
        "is {} at risk of a stock-out",
    ]
    for i in range(n):
        kind = ["code", "store_code", "words", "words", "policy", "supplier"][i % 6]
        if kind == "code":
            doc = sheets[rng.integers(len(sheets))]
            out.append((code_templates[i % 3].format(doc.metadata["item"]), kind, doc.metadata["item"]))
        elif kind == "store_code":
            doc = sheets[rng.integers(len(sheets))]
            out.append((f"forecast for {doc.metadata['sku']} next month", kind, doc.id))
        elif kind == "words":
            doc = sheets[rng.integers(len(sheets))]
            words = doc.text.split(": ", 1)[1].split(" at store")[0].lower().split()
            out.append(
                (f"safety stock of the {' '.join(words[: min(3, len(words))])}", kind, doc.metadata["item"])
            )
        elif kind == "policy":
            q, page = POLICY_QUERIES[i % len(POLICY_QUERIES)]
            out.append((q, kind, page))
        else:
            v = suppliers[rng.integers(len(suppliers))]
            out.append((f"what is the lead time of supplier {v}?", kind, f"supplier:{v}"))
    return out


def is_hit(kind: str, expected: str, hits: list) -> tuple[bool, bool]:
    """(hit at 1, hit at 5)."""

    def ok(h) -> bool:
        if kind in ("code", "words"):
            return h.doc.metadata.get("item") == expected
        if kind == "policy":
            return h.doc.metadata.get("page") == expected
        return h.doc.id == expected

    return bool(hits) and ok(hits[0]), any(ok(h) for h in hits[:5])


def time_searches(index: HybridIndex, queries, qvecs, **kw) -> tuple[list[float], list]:
    times, results = [], []
    for (q, _, _), v in zip(queries, qvecs, strict=True):
        t = time.perf_counter()
        hits = index.search(q, k=5, query_vector=v, **kw)
        times.append(time.perf_counter() - t)
        results.append(hits)
    return times, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--embed-all", action="store_true", help="embed every chunk text with the model")
    ap.add_argument("--no-flat", action="store_true", help="skip the exact flat index comparison")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    fig: dict[str, object] = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count()}

    t = time.perf_counter()
    docs, sku_row, store_of, skus = build_corpus(args.chunks)
    fig["corpus_s"] = time.perf_counter() - t
    fig["chunks"] = len(docs)
    print(
        f"corpus: {len(docs):,} chunks ({len(skus):,} real SKUs, {store_of.max() + 1} stores) "
        f"in {fig['corpus_s']:.1f}s"
    )

    emb = get_embedder()
    sample = [d.text for d in docs[:: max(1, len(docs) // 256)]][:256]
    emb.encode(sample[:8])  # load the model
    t = time.perf_counter()
    emb.encode(sample)
    rate = len(sample) / (time.perf_counter() - t)
    fig["embed_texts_per_s"] = rate
    print(
        f"model throughput on real fact-sheet texts: {rate:.0f} texts/s "
        f"({len(docs) / rate / 60:.0f} min to embed all)"
    )

    t = time.perf_counter()
    if args.embed_all:
        vecs = cached_encode([d.text for d in docs], "chunks")
    else:
        desc = cached_encode(skus["desc"].str.title().tolist(), "desc")
        stores = cached_encode([f"at store ST_{s + 1:02d}" for s in range(int(store_of.max()) + 1)], "stores")
        vecs = np.zeros((len(docs), desc.shape[1]), dtype=np.float32)
        sheet = sku_row >= 0
        vecs[sheet] = desc[sku_row[sheet]] + 0.35 * stores[store_of[sheet]]
        others = [d.text for d, s in zip(docs, sheet, strict=True) if not s]
        vecs[~sheet] = cached_encode(others, "others")
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    fig["vectors_s"] = time.perf_counter() - t
    print(
        f"vectors ({'all texts embedded' if args.embed_all else 'composed from real embeddings'}): "
        f"{fig['vectors_s']:.1f}s"
    )

    rss0 = rss_mb()
    t = time.perf_counter()
    index = HybridIndex(emb)
    index.upsert(docs, vectors=vecs)
    fig["build_s"] = time.perf_counter() - t
    fig["build_rss_mb"] = rss_mb() - rss0
    fig["index_arrays_mb"] = {k: v / 2**20 for k, v in index.memory_bytes().items()}
    fig["dense_kind"] = index.dense_kind
    print(
        f"build ({index.dense_kind}, vectors given): {fig['build_s']:.1f}s; "
        f"RSS +{fig['build_rss_mb']:.0f} MB (dense {fig['index_arrays_mb']['dense']:.0f} MB, "
        f"BM25 postings {fig['index_arrays_mb']['lexical']:.0f} MB)"
    )

    queries = make_queries(args.queries, docs)
    qvecs, embed_t = [], []
    for q, _, _ in queries:
        t = time.perf_counter()
        qvecs.append(emb.encode_query(q))
        embed_t.append(time.perf_counter() - t)
    time_searches(index, queries[:10], qvecs[:10])  # warm-up
    ret_t, results = time_searches(index, queries, qvecs)
    e2e_t = []
    for q, _, _ in queries:
        t = time.perf_counter()
        index.search(q, k=5)
        e2e_t.append(time.perf_counter() - t)
    filt_t, _ = time_searches(index, queries, qvecs, filters={"type": "sku", "store": "ST_03"})
    dense_t, _ = time_searches(index, queries, qvecs, mode="dense")
    lex_t, _ = time_searches(index, queries, qvecs, mode="lexical")

    def row(name: str, xs: list[float]) -> None:
        fig[name] = {
            "p50_ms": pct(xs, 50),
            "p95_ms": pct(xs, 95),
            "p99_ms": pct(xs, 99),
            "max_ms": max(xs) * 1000,
        }
        print(
            f"  {name:<34} p50 {pct(xs, 50):6.2f} ms   p95 {pct(xs, 95):6.2f} ms   p99 {pct(xs, 99):6.2f} ms"
        )

    print(f"latency over {len(queries)} queries, k=5, {len(docs):,} chunks:")
    row("query_embedding", embed_t)
    row("retrieval_fused (no embedding)", ret_t)
    row("end_to_end (embedding + retrieval)", e2e_t)
    row("retrieval_filtered type+store", filt_t)
    row("dense_only", dense_t)
    row("lexical_only", lex_t)

    by_kind: dict[str, list[tuple[bool, bool]]] = {}
    for (_, kind, expected), hits in zip(queries, results, strict=True):
        by_kind.setdefault(kind, []).append(is_hit(kind, expected, hits))
    fig["hits"] = {
        k: {"at1": float(np.mean([a for a, _ in v])), "at5": float(np.mean([b for _, b in v])), "n": len(v)}
        for k, v in by_kind.items()
    }
    print(
        "sanity hits (hybrid):",
        ", ".join(f"{k} @1 {v['at1']:.2f} @5 {v['at5']:.2f}" for k, v in fig["hits"].items()),
    )

    if not args.no_flat and index.dense_kind == "ivf":
        flat = HybridIndex(emb, IndexConfig(ivf_min_size=None))
        t = time.perf_counter()
        flat.upsert(docs, vectors=vecs)
        fig["flat_build_s"] = time.perf_counter() - t
        flat_t, flat_res = time_searches(flat, queries, qvecs)
        row("retrieval_fused exact flat", flat_t)
        overlap = []
        for (q, _, _), v in zip(queries, qvecs, strict=True):
            a = {h.doc.id for h in index.search(q, k=10, mode="dense", query_vector=v)}
            b = {h.doc.id for h in flat.search(q, k=10, mode="dense", query_vector=v)}
            overlap.append(len(a & b) / max(len(b), 1))
        same_top1 = np.mean([x[0].doc.id == y[0].doc.id for x, y in zip(results, flat_res, strict=True)])
        fig["ivf_dense_recall_at10"] = float(np.mean(overlap))
        fig["ivf_vs_flat_same_top1_fused"] = float(same_top1)
        print(
            f"IVF dense recall@10 vs exact flat: {np.mean(overlap):.3f}; "
            f"fused top-1 identical: {same_top1:.3f}"
        )
        del flat

    # incremental update: 10 changed texts (embedded by the model), 10 removals
    changed = [KBDocument(d.id, d.text + " Price rise announced.", d.metadata) for d in docs[100:110]]
    n0 = emb.n_texts
    t = time.perf_counter()
    stats = index.upsert(changed)
    removed = index.remove([d.id for d in docs[200:210]])
    fig["update_10_s"] = time.perf_counter() - t
    print(
        f"incremental: {stats.updated} changed + {removed} removed in {fig['update_10_s']:.2f}s "
        f"({emb.n_texts - n0} texts embedded, no rebuild)"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = index.save(Path(tmp) / "index")
        fig["save_s"] = time.perf_counter() - t
        fig["disk_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        t = time.perf_counter()
        again = HybridIndex.load(folder, emb)
        fig["load_s"] = time.perf_counter() - t
        assert again.size == index.size
    print(f"save {fig['save_s']:.1f}s, load {fig['load_s']:.1f}s, {fig['disk_mb']:.0f} MB on disk")
    fig["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fig["load_avg_end"] = os.getloadavg()
    print(
        f"peak RSS {fig['peak_rss_mb']:.0f} MB; load average {fig['load_avg_start']} -> {fig['load_avg_end']}"
    )
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1, default=float))


if __name__ == "__main__":
    main()
