"""The demo pipeline on the embedded UCI Online Retail data: weekly SKU demand, demand classes,
a backtest of auto against baselines, and an 8-week forecast, all saved in the results store."""

from __future__ import annotations

import time
from importlib import resources

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from forecasting import engine
from forecasting.classify import class_counts, classify_demand
from forecasting.data import require_length
from forecasting.store import ResultsStore
from forecasting.transactions import sku_descriptions, transactions_to_demand

DEMO_BASELINES = ("snaive", "ma", "sba")


def demo_transactions() -> pd.DataFrame:
    """UCI Online Retail (CC BY 4.0), shipped with the package."""
    path = resources.files("forecasting") / "demo_data" / "online_retail.parquet"
    with resources.as_file(path) as p:
        return pd.read_parquet(p)


def run_demo(horizon: int = 8, windows: int = 1, quiet: bool = False) -> dict:
    """Run the demo pipeline and print a compact summary; returns the summary as a dict."""
    console = Console(stderr=True, quiet=quiet)
    out = Console(quiet=quiet)
    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    steps = 3 + len(DEMO_BASELINES) + 1 + len(engine.AUTO_CANDIDATES) * 2 + 1
    with Progress(*columns, console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("loading UCI Online Retail", total=steps)

        def step(message: str) -> None:
            bar.update(task, description=message, advance=1)

        raw = demo_transactions()
        demand, tx_report, freq = transactions_to_demand(raw, "W")
        demand = require_length(demand, 2 * horizon + 1)
        step("classifying demand")
        classes = classify_demand(demand)
        step("backtesting")
        metrics, _ = engine.backtest(demand, freq, horizon, windows, ["auto", *DEMO_BASELINES], progress=step)
        result = engine.forecast(demand, freq, horizon, "auto", progress=step)
        step("saving results")
        fc = result.forecast
        descriptions = sku_descriptions(raw)
        store = ResultsStore()
        run_id = store.new_run("demo", {"data": "UCI Online Retail", "freq": freq, "horizon": horizon})
        store.save("demand", demand, run_id)
        store.save("demand_classes", classes, run_id)
        store.save("backtest_metrics", metrics, run_id)
        store.save("forecasts", fc, run_id)
        store.save(
            "sku_descriptions",
            descriptions.rename("description").rename_axis("unique_id").reset_index(),
            run_id,
        )

    counts = class_counts(classes)
    top = (
        fc.groupby("unique_id")[["yhat", "yhat_lower", "yhat_upper"]]
        .sum()
        .sort_values("yhat", ascending=False)
        .head(10)
    )
    summary = {
        "run_id": run_id,
        "transactions": tx_report,
        "series": int(demand["unique_id"].nunique()),
        "weeks": int(demand["ds"].nunique()),
        "demand_classes": counts,
        "backtest": metrics.to_dict(orient="records"),
        "forecast_rows": len(fc),
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
    out.print(f"saved as run {run_id} in the results store; {summary['seconds']} s")
    return summary
