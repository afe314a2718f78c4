"""The demo pipeline on the embedded UCI Online Retail data: weekly SKU demand, demand classes, a backtest
of auto against baselines, an 8-week forecast, inventory facts and order advice, all saved as one
"pipeline" run (forecasting.pipeline.run_pipeline) in the results store."""

from __future__ import annotations

import time
from importlib import resources

import pandas as pd
from rich.console import Console
from rich.table import Table

from forecasting.classify import class_counts
from forecasting.pipeline import BASELINES, pipeline_steps, progress_bar, run_pipeline
from forecasting.transactions import sku_descriptions, transactions_to_demand

DEMO_BASELINES = BASELINES
DEMO_DATASET = "UCI Online Retail"


def demo_transactions() -> pd.DataFrame:
    """UCI Online Retail (CC BY 4.0), shipped with the package."""
    path = resources.files("forecasting") / "demo_data" / "online_retail.parquet"
    with resources.as_file(path) as p:
        return pd.read_parquet(p)


def demo_demand() -> tuple[pd.DataFrame, dict, str, pd.Series]:
    """Weekly SKU demand (with the average unit price), the cleaning report, the frequency, descriptions."""
    raw = demo_transactions()
    demand, tx_report, freq = transactions_to_demand(raw, "W")
    return demand, tx_report, freq, sku_descriptions(raw)


def run_demo(horizon: int = 8, windows: int = 1, quiet: bool = False, as_of: str | None = None) -> dict:
    """Run the demo pipeline and print a compact summary; returns the summary as a dict."""
    start = time.perf_counter()
    out = Console(quiet=quiet)
    with progress_bar(pipeline_steps("auto", DEMO_BASELINES), "loading UCI Online Retail", quiet) as step:
        demand, tx_report, freq, descriptions = demo_demand()
        result = run_pipeline(
            demand,
            freq,
            horizon,
            descriptions=descriptions,
            dataset=DEMO_DATASET,
            as_of=as_of,
            windows=windows,
            progress=step,
        )
    run_id, classes, metrics, fc = result.run_id, result.classes, result.metrics, result.forecast
    demand = result.demand
    counts = class_counts(classes)
    first = fc.sort_values("ds").groupby("unique_id")[["yhat", "yhat_lower", "yhat_upper"]].first()
    top = first.assign(total=fc.groupby("unique_id")["yhat"].sum()).nlargest(10, "total")
    summary = {
        "run_id": run_id,
        "transactions": tx_report,
        "series": int(demand["unique_id"].nunique()),
        "weeks": int(demand["ds"].nunique()),
        "demand_classes": counts,
        "backtest": metrics.to_dict(orient="records"),
        "forecast_rows": len(fc),
        "to_order_now": int((result.kpis["status"] == "order now").sum()),
        "assumed": result.assumed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out.print(
        f"[bold]StockPilot demo[/] — UCI Online Retail (CC BY 4.0): {tx_report['kept_lines']:,} sold lines "
        f"of {tx_report['input_lines']:,}; {summary['series']:,} SKUs x {summary['weeks']} weeks"
    )
    out.print("demand classes: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    table = Table(title=f"backtest, {windows} window(s) x {horizon} weeks")
    for col in ("model", "mae", "rmsse", "smape", "bias", "coverage", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in metrics.itertuples():
        table.add_row(
            row.model,
            f"{row.mae:.2f}",
            f"{row.rmsse:.3f}",
            f"{row.smape:.1f}",
            f"{row.bias:.2f}",
            f"{row.coverage:.1%}",
            f"{row.seconds:.1f}",
        )
    out.print(table)
    table = Table(title=f"top 10 SKUs by forecast units, next {horizon} weeks")
    for col in ("SKU", "description", f"units, {horizon} weeks", "next week (90% interval)"):
        table.add_column(col)
    for uid, r in top.iterrows():
        table.add_row(
            uid,
            str(descriptions.get(uid, ""))[:40],
            f"{r.total:,.0f}",
            f"{r.yhat:,.0f} ({r.yhat_lower:,.0f} - {r.yhat_upper:,.0f})",
        )
    out.print(table)
    out.print(
        f"inventory: {summary['to_order_now']:,} SKUs to order now; assumed (no stock or cost data): "
        + ", ".join(sorted(result.assumed))
    )
    out.print(f"saved as run {run_id} in the results store; {summary['seconds']} s")
    return summary
