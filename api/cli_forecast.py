"""`stockpilot forecast`, `backtest` and `demo`: the forecasting engine from the command line."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from api.cli_common import (
    DateColOpt,
    ExogColsOpt,
    FreqOpt,
    FutureOpt,
    HorizonOpt,
    IdColsOpt,
    InputArg,
    JsonOpt,
    QueryOpt,
    TargetColOpt,
    console,
    guarded,
    print_json,
    print_table,
    read_long,
    split_cols,
)
from forecasting import engine
from forecasting.classify import class_counts, classify_demand
from forecasting.data import LoadReport, future_frame, require_length
from forecasting.errors import InputError
from forecasting.io import read_table, write_table
from forecasting.models.base import static_columns
from forecasting.store import ResultsStore

ModelOpt = typer.Option("auto", "--model", help="auto, or a model name (naive, snaive, ma, ets, lgbm, ...).")
StockoutOpt = typer.Option(
    1.0,
    "--stockout-weight",
    min=1.0,
    help="Weight of under-forecasts vs over-forecasts (e.g. 3); 1 = symmetric.",
)
SeedOpt = typer.Option(42, "--seed", help="Random seed for the learned models.")


@contextmanager
def progress_bar(total: int, quiet: bool = False):
    """A Rich progress bar on stderr; yields a callback that advances it with a message."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("starting", total=total)

        def step(message: str) -> None:
            bar.update(task, description=message, advance=1)

        yield step


def load_long(
    input: str,
    query: str | None,
    id_cols: str,
    date_col: str,
    target_col: str,
    exog_cols: str | None,
    freq: str,
) -> tuple[pd.DataFrame, LoadReport, str, list[str]]:
    _, df, report, pfreq, exog = read_long(input, query, id_cols, date_col, target_col, exog_cols, freq)
    return df, report, pfreq, exog


def load_future(path: str | None, id_cols: str, date_col: str, exog: list[str], df: pd.DataFrame, freq: str):
    dynamic = [c for c in exog if c not in static_columns(df)]
    if path is None:
        if dynamic:
            console.print(
                "[yellow]warning:[/] no --future file: the last known values of "
                f"{', '.join(dynamic)} are carried forward"
            )
        return None
    return future_frame(read_table(path), split_cols(id_cols), date_col, dynamic, freq)


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)
    app.command("backtest")(backtest)
    app.command("demo")(demo)


@guarded
def forecast(
    input: str = InputArg,
    id_cols: str = IdColsOpt,
    date_col: str = DateColOpt,
    target_col: str = TargetColOpt,
    exog_cols: str = ExogColsOpt,
    future: str = FutureOpt,
    freq: str = FreqOpt,
    horizon: int = HorizonOpt,
    model: str = ModelOpt,
    output: Path = typer.Option(..., "--output", help="Forecast table to write (.csv, .csv.gz or .parquet)."),
    query: str = QueryOpt,
    stockout_weight: float = StockoutOpt,
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Forecast every series HORIZON periods ahead with a 90% interval."""
    names = engine.resolve_models(model)
    if len(names) != 1:
        raise InputError("forecast takes one model (auto or a name)")
    start = time.perf_counter()
    df, report, pfreq, exog = load_long(input, query, id_cols, date_col, target_col, exog_cols, freq)
    df = require_length(df, horizon, report)
    X_df = load_future(future, id_cols, date_col, exog, df, pfreq)
    n_steps = (len(engine.auto_candidates(df, pfreq, horizon)) * 2 if names[0] == "auto" else 2) + 1
    with progress_bar(n_steps, quiet=as_json) as step:
        result = engine.forecast(df, pfreq, horizon, names[0], X_df, stockout_weight, seed, progress=step)
    fc = result.forecast
    write_table(fc, output)
    classes = classify_demand(df)
    store = ResultsStore()
    run_id = store.new_run(
        "forecast", {"input": str(input), "model": model, "horizon": horizon, "freq": pfreq}
    )
    store.save("forecasts", fc, run_id)
    store.save("demand_classes", classes, run_id)
    if result.attention is not None and len(result.attention):
        store.save("forecast_attention", result.attention, run_id)
    seconds = time.perf_counter() - start
    summary = {
        "output": str(output),
        "run_id": run_id,
        "series": int(fc["unique_id"].nunique()),
        "rows": len(fc),
        "horizon": horizon,
        "freq": pfreq,
        "model": model,
        "models_used": fc.drop_duplicates("unique_id")["model"].value_counts().to_dict(),
        "demand_classes": class_counts(classes),
        "notes": report.lines(),
        "seconds": round(seconds, 2),
    }
    if as_json:
        print_json(summary)
        return
    for line in report.lines():
        console.print(line)
    console.print(f"demand classes: {summary['demand_classes']}")
    console.print(f"models used: {summary['models_used']}")
    print_table(fc.head(10), title=f"forecast ({len(fc)} rows written to {output})")
    console.print(f"done in {seconds:.1f} s, run {run_id}")


@guarded
def backtest(
    input: str = InputArg,
    id_cols: str = IdColsOpt,
    date_col: str = DateColOpt,
    target_col: str = TargetColOpt,
    exog_cols: str = ExogColsOpt,
    future: str = FutureOpt,
    freq: str = FreqOpt,
    horizon: int = HorizonOpt,
    model: str = ModelOpt,
    windows: int = typer.Option(3, "--windows", min=1, help="Number of rolling-origin windows."),
    output: Path = typer.Option(..., "--output", help="Metrics table to write (one row per model)."),
    query: str = QueryOpt,
    stockout_weight: float = StockoutOpt,
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rolling-origin backtest: one metrics row per model (comma-separate several to compare)."""
    names = engine.resolve_models(model)
    df, report, pfreq, _ = load_long(input, query, id_cols, date_col, target_col, exog_cols, freq)
    df = require_length(df, horizon * (windows + 1), report)
    with progress_bar(len(names), quiet=as_json) as step:
        metrics, per_series = engine.backtest(df, pfreq, horizon, windows, names, stockout_weight, seed, step)
    write_table(metrics, output)
    store = ResultsStore()
    run_id = store.new_run(
        "backtest", {"input": str(input), "models": names, "horizon": horizon, "windows": windows}
    )
    store.save("backtest_metrics", metrics, run_id)
    store.save("backtest_series", per_series, run_id)
    if as_json:
        print_json({"output": str(output), "run_id": run_id, "notes": report.lines(), "metrics": metrics})
        return
    for line in report.lines():
        console.print(line)
    print_table(metrics, title=f"backtest: {windows} windows x {horizon} periods")


@guarded
def demo(
    horizon: int = typer.Option(8, "--horizon", min=1, help="Weeks to forecast."),
    as_json: bool = JsonOpt,
) -> None:
    """Run the pipeline on the embedded UCI Online Retail data (weekly SKU demand)."""
    from forecasting.demo import run_demo

    summary = run_demo(horizon=horizon, quiet=as_json)
    if as_json:
        print_json(summary)
