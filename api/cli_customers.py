"""`stockpilot customers segments|clv|churn|recommend|anomalies INPUT`: customer analytics on invoice lines.

Every command reads an invoice-line table (CSV, CSV.GZ, Parquet or SQL), cleans it with the rules in
`forecasting.customers.transactions`, saves its results in the results store (one run per call) and
prints a table, or JSON with --json. JSON shapes (every one also carries "run_id"):

- segments: {"k", "silhouette", "silhouette_by_k": {k: s}, "customers", "segments": [{"id", "name",
  "size", "centroid": {feature: value}}]}  (store: customer_segments, segment_summary, segment_centroids)
- clv: {"cutoff", "horizon_months", "horizon_days", "params": {r, alpha, a, b, p, q, v}, "season_factor",
  "season_note", "totals": {"customers", "expected_purchases", "expected_value"}, "customers": [{
  "customer_id", "frequency", "recency", "T", "p_alive", "expected_purchases", "expected_spend",
  "expected_value"}]}  (store: customer_clv)
- churn: {"as_of", "horizon_days", "model", "validation": {"cutoff", "customers", "churn_rate", "roc_auc",
  "roc_auc_ci95", "pr_auc", "training_cutoffs", "n_train", ...}, "feature_importances": {feature: share},
  "customers_scored", "expected_churn_rate", "customers": [{"customer_id", "recency_days", "frequency",
  "monetary", "spend_last_90d", "churn_probability", "value_at_risk"}]}  (store: customer_churn)
- recommend --sku S: {"method", "n", "sku", "description", "buyers", "similar": [{"sku", "description",
  "score"}], "also_bought": [{"sku", "description", "buyers_both", "share_of_buyers"}]}
- recommend [--customer C ...]: {"method", "n", "customers", "recommendations": [{"customer_id", "rank",
  "sku", "description", "score"}]}  (all customers when none is given, the first --top shown;
  store: recommendations); --evaluate adds "evaluation": {"cutoff", "results": [{"method",
  "hit_rate_at_N", "recall_at_N", "precision_at_N", "customers", "lift_vs_popular"}]} with N = --n
- anomalies: {"orders", "contamination", "threshold", "flagged", "top": [{"rank", "invoice",
  "customer_id", "ts", "value", "quantity", "n_lines", "hour", "anomaly_score", "is_anomaly",
  "top_features", "reasons"}]}  (store: order_anomalies, the flagged orders)
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import typer

from api.cli_common import (
    InputArg,
    JsonOpt,
    QueryOpt,
    console,
    guarded,
    option_group,
    out_console,
    print_json,
    print_table,
)
from forecasting.customers.transactions import (
    TransactionColumns,
    Transactions,
    clean_transactions,
    report_lines,
)
from forecasting.errors import InputError
from forecasting.io import read_table
from forecasting.store import ResultsStore

customers_app = typer.Typer(
    help="Customer analytics on invoice lines: segments, lifetime value, churn, recommendations, anomalies.",
    no_args_is_help=True,
)

# Invoice-line column options shared by every command (defaults fit UCI Online Retail)
transaction_columns = option_group(
    "cols",
    {
        "invoice_col": (
            str,
            typer.Option("InvoiceNo", "--invoice-col", help="Invoice number column (C... = cancellation)."),
        ),
        "customer_col": (str, typer.Option("CustomerID", "--customer-col", help="Customer id column.")),
        "date_col": (str, typer.Option("InvoiceDate", "--date-col", help="Invoice date-time column.")),
        "sku_col": (str, typer.Option("StockCode", "--sku-col", help="Product code column.")),
        "quantity_col": (
            str,
            typer.Option("Quantity", "--quantity-col", help="Quantity column (negative = return)."),
        ),
        "price_col": (str, typer.Option("UnitPrice", "--price-col", help="Unit price column.")),
        "description_col": (
            str,
            typer.Option(
                "Description",
                "--description-col",
                help="Product description column (optional; for content similarity).",
            ),
        ),
    },
    build=lambda **c: TransactionColumns(**{k.removesuffix("_col"): v for k, v in c.items()}),
)
TopOpt = typer.Option(20, "--top", min=1, help="How many rows to print.")


def load_transactions(input: str, query: str | None, cols: TransactionColumns, quiet: bool) -> Transactions:
    """Read and clean an invoice-line table; report what the cleaning rules removed (unless quiet)."""
    df = read_table(input, query)
    if cols.description and cols.description not in df.columns:
        cols = replace(cols, description=None)
    tx = clean_transactions(df, cols)
    if not quiet:
        console.print("[dim]" + ", ".join(report_lines(tx.report)) + "[/]")
    return tx


def _save(kind: str, params: dict, tables: dict[str, pd.DataFrame]) -> str:
    """Save result tables under one new run of `kind`; list columns are stored as text."""
    store = ResultsStore()
    run_id = store.new_run(kind, params)
    for name, df in tables.items():
        frame = df.copy()
        for col in frame.columns:
            if frame[col].map(lambda v: isinstance(v, list | dict)).any():
                frame[col] = frame[col].map(
                    lambda v: "; ".join(map(str, v)) if isinstance(v, list) else str(v)
                )
        store.save(name, frame, run_id)
    return run_id


def _descriptions(tx: Transactions, skus) -> list[str | None]:
    desc = tx.sku_descriptions()
    return [desc.get(s) for s in skus]


@customers_app.command("segments")
@guarded
@transaction_columns
def segments_cmd(
    cols: TransactionColumns,
    input: str = InputArg,
    query: str | None = QueryOpt,
    k_min: int = typer.Option(3, "--k-min", min=2, help="Smallest number of segments to try."),
    k_max: int = typer.Option(8, "--k-max", min=2, help="Largest number of segments to try."),
    seed: int = typer.Option(0, "--seed", help="K-means random seed."),
    json_out: bool = JsonOpt,
) -> None:
    """RFM + behavioural segments (K-means, k chosen by silhouette), named from their centroids."""
    from forecasting.customers.rfm import customer_features
    from forecasting.customers.segments import CustomerSegmenter

    tx = load_transactions(input, query, cols, quiet=json_out)
    feats = customer_features(tx)
    reference = _previous_centroids()
    seg = CustomerSegmenter(k_range=(k_min, k_max), random_state=seed).fit(feats, reference=reference)
    per_customer = feats[seg.features_].join(seg.labels_).join(seg.segments_).reset_index()
    centroids = seg.centroid_z_.add_prefix("z_").reset_index()
    centroids.insert(1, "name", seg.names_)
    run_id = _save(
        "customer_segments",
        {"input": str(input), "k_range": [k_min, k_max], "seed": seed, "features": seg.features_},
        {"customer_segments": per_customer, "segment_summary": seg.summary(), "segment_centroids": centroids},
    )
    result = {**seg.to_json(), "customers": len(feats), "run_id": run_id}
    if json_out:
        print_json(result)
        return
    console.print(f"k = {seg.k_} (silhouette {seg.silhouette_:.3f}), {len(feats):,} customers, run {run_id}")
    print_table(seg.summary().drop(columns=["segment_id"]), title="Customer segments (centroids)", digits=2)


def _previous_centroids() -> pd.DataFrame | None:
    """Standardised centroids of the latest stored segmentation, to keep segment ids stable."""
    try:
        prev = ResultsStore().load("segment_centroids", kind="customer_segments")
    except Exception:  # a store that cannot be read just means no previous run to match
        return None
    if prev.empty:
        return None
    prev = prev[prev["run_id"] == prev["run_id"].iloc[-1]].sort_values("segment_id")
    cols = [c for c in prev.columns if c.startswith("z_")]
    return prev[cols].rename(columns=lambda c: c[2:]).reset_index(drop=True)


@customers_app.command("clv")
@guarded
@transaction_columns
def clv_cmd(
    cols: TransactionColumns,
    input: str = InputArg,
    query: str | None = QueryOpt,
    months: float = typer.Option(3.0, "--months", min=0.1, help="Prediction horizon in months."),
    season: str = typer.Option("auto", "--season", help="auto (year-over-year index), none, or a factor."),
    customer: list[str] = typer.Option(None, "--customer", help="Show these customers (repeatable)."),
    top: int = TopOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lifetime value: BG/NBD purchases and Gamma-Gamma spend over the next --months per customer."""
    from forecasting.customers.clv import LifetimeValueModel

    tx = load_transactions(input, query, cols, quiet=json_out)
    season_value: str | float = season
    if season.lower() not in ("auto", "none"):
        try:
            season_value = float(season)
        except ValueError:
            raise InputError(f"--season must be auto, none or a number, got {season!r}") from None
    model = LifetimeValueModel(season=season_value).fit(tx)
    pred = model.predict(months=months).reset_index()
    run_id = _save(
        "customer_clv",
        {"input": str(input), "months": months, "season": season, "cutoff": model.cutoff_, **model.params()},
        {"customer_clv": pred},
    )
    shown = _pick_customers(pred, customer, top)
    show = ["customer_id", "frequency", "recency", "T", "p_alive", "expected_purchases", "expected_spend"]
    result = {
        "cutoff": f"{model.cutoff_:%Y-%m-%d}",
        "horizon_months": months,
        "horizon_days": round(float(pred["horizon_days"].iloc[0]), 2),
        "params": {k: round(v, 6) for k, v in model.params().items()},
        "season_factor": round(model.season_factor_, 4),
        "season_note": model.season_note_,
        "totals": {
            "customers": len(pred),
            "expected_purchases": round(float(pred["expected_purchases"].sum()), 2),
            "expected_value": round(float(pred["expected_value"].sum()), 2),
        },
        "customers": shown[[*show, "expected_value"]].round(4),
        "run_id": run_id,
    }
    if json_out:
        print_json(result)
        return
    t = result["totals"]
    console.print(
        f"next {months:g} months from {result['cutoff']}: {t['expected_purchases']:,.0f} purchase days, "
        f"value {t['expected_value']:,.0f} over {t['customers']:,} customers; {model.season_note_}; "
        f"run {run_id}"
    )
    print_table(shown[[*show, "expected_value"]], title="Customer lifetime value", digits=2)


def _pick_customers(df: pd.DataFrame, customers: list[str] | None, top: int) -> pd.DataFrame:
    if not customers:
        return df.head(top)
    wanted = [str(c).strip() for c in customers]
    unknown = [c for c in wanted if c not in set(df["customer_id"])]
    if unknown:
        raise InputError(f"unknown customer {unknown[0]!r}: no purchases in the data")
    return df[df["customer_id"].isin(wanted)]


@customers_app.command("churn")
@guarded
@transaction_columns
def churn_cmd(
    cols: TransactionColumns,
    input: str = InputArg,
    query: str | None = QueryOpt,
    horizon_days: int = typer.Option(
        90, "--horizon-days", min=7, help="Churn = no purchase in this many days."
    ),
    model_name: str = typer.Option(
        "logit", "--model", help="logit (logistic regression), rf (random forest) or gbm (gradient boosting)."
    ),
    customer: list[str] = typer.Option(None, "--customer", help="Show these customers (repeatable)."),
    top: int = TopOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Churn risk per customer, with a time-split validation (the last --horizon-days held out)."""
    from forecasting.customers.churn import ChurnModel, churn_table, evaluate_churn

    tx = load_transactions(input, query, cols, quiet=json_out)
    as_of = tx.end.normalize() + pd.Timedelta(days=1)
    validation = evaluate_churn(tx, as_of - pd.Timedelta(days=horizon_days), horizon_days, model_name)
    model = ChurnModel(horizon_days=horizon_days, model=model_name).fit(tx, as_of)
    scores = churn_table(tx, model, as_of)
    scores = scores.sort_values(["value_at_risk", "churn_probability"], ascending=False).reset_index(
        drop=True
    )
    run_id = _save(
        "customer_churn",
        {"input": str(input), "horizon_days": horizon_days, "model": model_name, "as_of": as_of},
        {"customer_churn": scores},
    )
    shown = _pick_customers(scores, customer, top)
    metrics = {k: v for k, v in validation.metrics.items() if k != "feature_importances"}
    result = {
        "as_of": f"{as_of:%Y-%m-%d}",
        "horizon_days": horizon_days,
        "model": model_name,
        "validation": metrics,
        "feature_importances": {k: round(float(v), 4) for k, v in model.feature_importances_.items()},
        "customers_scored": len(scores),
        "expected_churn_rate": round(float(scores["churn_probability"].mean()), 4),
        "customers": shown.round(4),
        "run_id": run_id,
    }
    if json_out:
        print_json(result)
        return
    lo, hi = metrics["roc_auc_ci95"]
    console.print(
        f"validation (fit before {metrics['cutoff']}, next {horizon_days} days held out): "
        f"ROC AUC {metrics['roc_auc']:.3f} (95% interval {lo:.3f}-{hi:.3f}), "
        f"PR AUC {metrics['pr_auc']:.3f}, churn rate {metrics['churn_rate']:.1%}"
    )
    imp = model.feature_importances_.head(5)
    console.print("top features: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    print_table(shown, title=f"Customers at risk (as of {as_of:%Y-%m-%d}, by value at risk)", digits=3)


@customers_app.command("recommend")
@guarded
@transaction_columns
def recommend_cmd(
    cols: TransactionColumns,
    input: str = InputArg,
    query: str | None = QueryOpt,
    customer: list[str] = typer.Option(
        None, "--customer", help="Recommend for these customers (repeatable)."
    ),
    sku: str | None = typer.Option(None, "--sku", help="What else do buyers of this SKU take?"),
    n: int = typer.Option(10, "--n", min=1, max=100, help="Recommendations per customer or SKU."),
    method: str = typer.Option("hybrid", "--method", help="popular, itemitem, content or hybrid."),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="Also run the time-split evaluation (last 90 days)."
    ),
    top: int = typer.Option(3, "--top", min=1, help="Without --customer: how many customers' lists to show."),
    json_out: bool = JsonOpt,
) -> None:
    """Products to recommend per customer, or items bought together with a SKU (--sku)."""
    from forecasting.customers.recommend import evaluate_recommenders, make_recommender

    tx = load_transactions(input, query, cols, quiet=json_out)
    model = make_recommender(method).fit(tx.lines)
    result: dict = {"method": method, "n": n}
    if sku:
        similar = model.similar_items(sku, n)
        similar.insert(1, "description", _descriptions(tx, similar["sku"]))
        also = model.also_bought(sku, n)
        also.insert(1, "description", _descriptions(tx, also["sku"]))
        key = str(sku).strip().upper()
        result.update(
            sku=key,
            description=_descriptions(tx, [key])[0],
            buyers=int(model.popularity_[model.items_.get_loc(key)]),
            similar=similar.round(4),
            also_bought=also.round(4),
        )
    else:
        targets = [str(c).strip() for c in customer] if customer else list(model.customers_)
        recs = model.recommend(targets, n)
        recs.insert(3, "description", _descriptions(tx, recs["sku"]))
        run_id = _save(
            "customer_recommendations",
            {"input": str(input), "method": method, "n": n},
            {"recommendations": recs},
        )
        result.update(
            customers=len(targets),
            run_id=run_id,
            recommendations=recs if customer else recs[recs["customer_id"].isin(targets[:top])],
        )
    if evaluate:
        cutoff = tx.end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(days=90)
        result["evaluation"] = {
            "cutoff": f"{cutoff:%Y-%m-%d}",
            "results": evaluate_recommenders(tx, cutoff, n=n).round(4),
        }
    if json_out:
        print_json(result)
        return
    if sku:
        console.print(f"{result['sku']} {result['description'] or ''}: {result['buyers']:,} buyers")
        print_table(result["similar"], title=f"Similar products ({method})")
        print_table(result["also_bought"], title="Also bought by its buyers")
    else:
        console.print(
            f"{method} recommendations for {result['customers']:,} customers, run {result['run_id']}"
        )
        print_table(
            result["recommendations"], title="Recommendations", max_rows=len(result["recommendations"])
        )
    if evaluate:
        print_table(
            result["evaluation"]["results"],
            title=f"Evaluation on purchases from {result['evaluation']['cutoff']}",
        )


@customers_app.command("anomalies")
@guarded
@transaction_columns
def anomalies_cmd(
    cols: TransactionColumns,
    input: str = InputArg,
    query: str | None = QueryOpt,
    contamination: float = typer.Option(0.01, "--contamination", help="Share of orders flagged (0-0.5)."),
    top: int = TopOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Unusual orders (Isolation Forest), each explained by its most unusual features."""
    from forecasting.customers.anomalies import OrderAnomalyDetector

    tx = load_transactions(input, query, cols, quiet=json_out)
    det = OrderAnomalyDetector(contamination=contamination).fit(tx)
    n_flagged = int((det.scores_ >= det.threshold_).sum())
    flagged = det.top(n_flagged)
    run_id = _save(
        "order_anomalies", {"input": str(input), "contamination": contamination}, {"order_anomalies": flagged}
    )
    shown = flagged.head(top) if len(flagged) >= top else det.top(top)
    result = {
        "orders": len(det.orders_),
        "contamination": contamination,
        "threshold": round(det.threshold_, 4),
        "flagged": n_flagged,
        "top": shown,
        "run_id": run_id,
    }
    if json_out:
        print_json(result)
        return
    console.print(
        f"{n_flagged:,} of {len(det.orders_):,} orders flagged (score >= {det.threshold_:.3f}), run {run_id}"
    )
    show = ["rank", "invoice", "customer_id", "ts", "value", "quantity", "n_lines", "anomaly_score"]
    print_table(shown[show], title="Most unusual orders", digits=2, max_rows=top)
    for row in shown.itertuples():
        out_console.print(f"{row.rank}. {row.invoice}: {row.reasons}")


def register(app: typer.Typer) -> None:
    """Add the `customers` command group to the main CLI."""
    app.add_typer(customers_app, name="customers")
