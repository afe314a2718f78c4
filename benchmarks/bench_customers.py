"""Benchmark customer analytics on the full UCI Online Retail data (541,909 lines, 4,372 customers).

Time split as in the issue: fit on data before 2011-09-09, evaluate on the rest (to 2011-12-09).
Prints the target figures (lifetime value correlation and totals, churn ROC/PR AUC, recommendation
hit rate@10 vs popularity, segment-aware demand accuracy), then fits every model on all the data as
the `stockpilot customers` commands do, with the wall time of each step, the total and peak memory.

    .venv/bin/python benchmarks/bench_customers.py                 # everything
    .venv/bin/python benchmarks/bench_customers.py --json out.json # also write the figures as JSON
    .venv/bin/python benchmarks/bench_customers.py --demand-model auto   # engine's auto selection (slow)
    .venv/bin/python benchmarks/bench_customers.py --rolling   # also the targets at earlier cut-offs
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting.customers.anomalies import OrderAnomalyDetector  # noqa: E402
from forecasting.customers.churn import ChurnModel, churn_table, evaluate_churn  # noqa: E402
from forecasting.customers.clv import LifetimeValueModel, evaluate_holdout, monthly_tracking  # noqa: E402
from forecasting.customers.recommend import HybridRecommender, evaluate_recommenders  # noqa: E402
from forecasting.customers.rfm import customer_features  # noqa: E402
from forecasting.customers.segment_demand import compare_segment_forecasts  # noqa: E402
from forecasting.customers.segments import CustomerSegmenter  # noqa: E402
from forecasting.customers.transactions import clean_transactions  # noqa: E402
from forecasting.io import read_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
CUTOFF = "2011-09-09"
OFF_PEAK = ("2011-06-10", "2011-09-09")


class Timer:
    """Collects wall seconds per named step."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.steps[name] = time.perf_counter() - start
        print(f"  [{self.steps[name]:6.1f}s] {name}", flush=True)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--demand-model", default="tsb", help="engine model for segment-aware demand")
    ap.add_argument("--demand-skus", type=int, default=30)
    ap.add_argument("--json", dest="json_path", default=None)
    ap.add_argument(
        "--rolling",
        action="store_true",
        help="after the timed run, also the CLV total and churn AUC at cut-offs every 30 days",
    )
    args = ap.parse_args()

    t = Timer()
    start = time.perf_counter()
    raw = t("read CSV.GZ", read_table, args.data)
    tx = t("clean transactions", clean_transactions, raw)
    del raw
    print(
        f"  {tx.report['input_lines']:,} lines, "
        f"{tx.lines['customer_id'].nunique():,} customers with purchases"
    )

    print("evaluation (fit before 2011-09-09, evaluate to 2011-12-09)")
    clv = t("lifetime value holdout", evaluate_holdout, tx, CUTOFF)
    calm = t("lifetime value off-peak window", evaluate_holdout, tx, OFF_PEAK[0], OFF_PEAK[1])
    past = tx.before(CUTOFF)
    track = t(
        "lifetime value calendar tracking",
        lambda: monthly_tracking(LifetimeValueModel(season="none").fit(past, CUTOFF), past),
    )
    churn = t("churn time split", evaluate_churn, tx, CUTOFF).metrics
    recs = t("recommenders (4 methods)", evaluate_recommenders, tx, CUTOFF)
    demand = t(
        f"segment-aware demand ({args.demand_model})",
        compare_segment_forecasts,
        tx,
        CUTOFF,
        n_skus=args.demand_skus,
        model=args.demand_model,
    ).metrics

    print("production fits on all data")
    feats = t("customer features", customer_features, tx)
    seg = t("segments", CustomerSegmenter().fit, feats)
    value = t("lifetime value (3 months)", lambda: LifetimeValueModel().fit(tx).predict(months=3))
    at_risk = t("churn model + scores", lambda: churn_table(tx, ChurnModel().fit(tx)))
    t(
        "hybrid recommendations, all customers",
        lambda: HybridRecommender().fit(tx.lines).recommend(list(tx.customers)),
    )
    anomalies = t("order anomalies", OrderAnomalyDetector().fit, tx)
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    recs = recs.set_index("method")
    pop = recs.loc["popular", "hit_rate_at_10"]
    print("\nlifetime value (BG/NBD + Gamma-Gamma), purchase days per customer in the holdout")
    print(
        f"  {CUTOFF}..{clv['end']}: {clv['customers']:,} customers, correlation {clv['correlation']:.3f}, "
        f"predicted {clv['predicted_total']:,.0f} vs actual {clv['actual_total']:,.0f} "
        f"({clv['total_error_pct']:+.1f}%); {clv['season_note']}"
    )
    print(
        f"  off-peak {OFF_PEAK[0]}..{OFF_PEAK[1]}: correlation {calm['correlation']:.3f}, predicted "
        f"{calm['predicted_total']:,.0f} vs actual {calm['actual_total']:,.0f} "
        f"({calm['total_error_pct']:+.1f}%)"
    )
    print(
        f"  spend per purchase: model {clv['predicted_spend_per_purchase']:,.0f} vs holdout "
        f"{clv['actual_spend_per_purchase']:,.0f}; value predicted {clv['predicted_value']:,.0f} vs actual "
        f"{clv['actual_value']:,.0f} ({100 * (clv['predicted_value'] / clv['actual_value'] - 1):+.1f}%)"
    )
    print(
        "  calibration tracking, actual/expected repeat purchase days by month: "
        + ", ".join(f"{m:%b} {r:.2f}" for m, r in track["ratio"].items())
    )
    print("  params: " + ", ".join(f"{k}={v:.4g}" for k, v in clv["params"].items()))
    print("churn (no purchase in the next 90 days)")
    print(
        f"  ROC AUC {churn['roc_auc']:.3f} (95% interval {churn['roc_auc_ci95'][0]:.3f}-"
        f"{churn['roc_auc_ci95'][1]:.3f}), PR AUC {churn['pr_auc']:.3f} "
        f"(churn rate {churn['churn_rate']:.3f}), "
        f"{churn['customers']:,} customers; trained at {', '.join(churn['training_cutoffs'])}"
    )
    top = list(churn["feature_importances"].items())[:5]
    print("  top features: " + ", ".join(f"{k} {v:.3f}" for k, v in top))
    print("recommendations (new products bought after the cut-off)")
    for method, row in recs.iterrows():
        print(
            f"  {method:9s} hit@10 {row['hit_rate_at_10']:.3f}  recall@10 {row['recall_at_10']:.4f}  "
            f"x{row['hit_rate_at_10'] / pop:.2f} popularity  ({int(row['customers']):,} customers)"
        )
    print("segments (all data)")
    print(
        f"  k={seg.k_} silhouette {seg.silhouette_:.3f}: "
        + ", ".join(f"{n} {s}" for n, s in zip(seg.names_, seg.sizes_, strict=True))
    )
    print(
        f"segment-aware demand ({demand['skus']} top SKUs, {demand['horizon_weeks']} weeks, "
        f"{demand['backend']} {demand['model']})"
    )
    print(
        f"  WAPE direct {demand['wape_direct']:.3f}, split by segment {demand['wape_split']:.3f} "
        f"(change {demand['wape_change']:+.3f}); bias direct {demand['bias_direct']:+.3f}, "
        f"split {demand['bias_split']:+.3f}; "
        f"split better on {demand['skus_better_split']}/{demand['skus']} SKUs"
    )
    print(
        f"anomalies: {int((anomalies.scores_ >= anomalies.threshold_).sum())} of "
        f"{len(anomalies.orders_):,} orders flagged"
    )
    print(f"production: {len(value):,} customer values, {len(at_risk):,} churn scores")
    print(f"\ntotal wall time {total:.1f}s, peak memory {peak_mb:,.0f} MB")

    targets = {
        "clv correlation >= 0.6": clv["correlation"] >= 0.6,
        "clv total within 15%": abs(clv["total_error_pct"]) <= 15,
        "churn ROC AUC >= 0.75": churn["roc_auc"] >= 0.75,
        "hybrid hit@10 >= 1.5x popularity": recs.loc["hybrid", "hit_rate_at_10"] >= 1.5 * pop,
        "everything < 120 s": total < 120,
    }
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    rolling = rolling_windows(tx) if args.rolling else None
    if args.json_path:
        out = {
            "clv": clv,
            "clv_off_peak": calm,
            "clv_tracking_ratio": {f"{m:%Y-%m}": r for m, r in track["ratio"].items()},
            "churn": churn,
            "recommendations": recs.reset_index().to_dict(orient="records"),
            "segments": seg.to_json(),
            "segment_demand": demand,
            "steps_seconds": t.steps,
            "total_seconds": total,
            "peak_memory_mb": peak_mb,
            "targets": targets,
            "rolling": rolling,
        }
        Path(args.json_path).write_text(json.dumps(out, indent=2, default=str))


def rolling_windows(tx) -> list[dict]:
    """CLV total error (next 92 days, as the headline's 2011-09-09..12-10) and churn AUC (next 90 days,
    with its bootstrap interval) at cut-offs every 30 days up to CUTOFF: shows whether a miss at the
    issue's cut-off is the method or the window."""
    print("\nrolling cut-offs, CLV over 92 days and churn over 90 (not in the timed total)")
    last = pd.Timestamp(CUTOFF)
    rows = []
    for cut in [last - pd.Timedelta(days=30 * k) for k in range(5, -1, -1)]:
        end = min(cut + pd.Timedelta(days=92), tx.end.normalize() + pd.Timedelta(days=1))
        clv = evaluate_holdout(tx, cut, end)
        churn = evaluate_churn(tx, cut).metrics
        lo, hi = churn["roc_auc_ci95"]
        rows.append(
            {
                "cutoff": f"{cut:%Y-%m-%d}",
                "end": f"{end:%Y-%m-%d}",
                "clv_correlation": clv["correlation"],
                "clv_total_error_pct": clv["total_error_pct"],
                "churn_roc_auc": churn["roc_auc"],
                "churn_roc_auc_ci95": [lo, hi],
            }
        )
        print(
            f"  {cut:%Y-%m-%d}..{end:%Y-%m-%d}: CLV correlation {clv['correlation']:.3f}, total "
            f"{clv['total_error_pct']:+.1f}%; churn ROC AUC {churn['roc_auc']:.3f} "
            f"(95% interval {lo:.3f}-{hi:.3f})",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    pd.set_option("display.width", 160)
    main()
