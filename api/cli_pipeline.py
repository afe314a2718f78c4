"""`stockpilot pipeline` (forecast + inventory + changes on any demand table, one stored run) and
`stockpilot index` (knowledge-base documents of the active run into the saved hybrid index)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

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
    out_console,
    print_json,
    print_table,
    read_long,
    split_cols,
)
from api.cli_inventory import (
    OpenPosOpt,
    PoDateColOpt,
    PoHistoryOpt,
    PriceColOpt,
    PromisedOpt,
    ReceiptColOpt,
    StockOpt,
    VendorColOpt,
)
from forecasting.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline)
    app.command("index")(index)


def _descriptions(raw: pd.DataFrame, id_cols: list[str], desc_col: str | None) -> pd.Series | None:
    if not desc_col:
        return None
    if desc_col not in raw.columns:
        raise InputError(f"description column {desc_col!r} is not in the input")
    uid = raw[id_cols].astype(str).agg("/".join, axis=1) if len(id_cols) > 1 else raw[id_cols[0]].astype(str)
    frame = pd.DataFrame({"uid": uid.to_numpy(), "d": raw[desc_col].astype("string").str.strip()})
    frame = frame.dropna()
    return frame.groupby("uid")["d"].agg(lambda s: s.value_counts().index[0])


def _transactions(input, query, ids, date_col, target_col, price_col, desc_col, freq):
    """Invoice lines -> (raw, SKU x period demand with its mean price, notes, freq, exog, descriptions)."""
    from forecasting.io import read_table
    from forecasting.transactions import TransactionColumns, sku_descriptions, transactions_to_demand

    if len(ids) != 1:
        raise InputError("--transactions takes one id column: the SKU code")
    cols = TransactionColumns(sku=ids[0], date=date_col, quantity=target_col)
    cols.price = price_col or cols.price
    cols.description = desc_col or cols.description
    raw = read_table(input, query)
    demand, report, pfreq = transactions_to_demand(raw, freq, cols)
    notes = [
        f"{report['kept_lines']:,} sold lines of {report['input_lines']:,} kept ({report['skus']:,} SKUs)"
    ]
    exog = [c for c in demand.columns if c not in ("unique_id", "ds", "y")]
    return raw, demand, notes, pfreq, exog, sku_descriptions(raw, cols)


@guarded
def pipeline(
    input: str = InputArg,
    id_cols: str = IdColsOpt,
    date_col: str = DateColOpt,
    target_col: str = TargetColOpt,
    exog_cols: str = ExogColsOpt,
    future: str = FutureOpt,
    freq: str = FreqOpt,
    horizon: int = HorizonOpt,
    as_of: str = typer.Option(None, "--as-of", help="Use the data up to this date (YYYY-MM-DD)."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset name (runs of one dataset are compared)."),
    model: str = typer.Option("auto", "--model", help="Forecast model: auto or one name."),
    windows: int = typer.Option(1, "--windows", min=1, help="Backtest windows."),
    attr_cols: str = typer.Option(
        None, "--attr-cols", help="Extra SKU attribute columns (cat_id, dept_id, ... are found by name)."
    ),
    desc_col: str = typer.Option(None, "--desc-col", help="Column with the SKU description."),
    price_col: str = PriceColOpt,
    stock: str = StockOpt,
    open_pos: str = OpenPosOpt,
    po_history: str = PoHistoryOpt,
    vendor_col: str = VendorColOpt,
    po_date_col: str = PoDateColOpt,
    receipt_col: str = ReceiptColOpt,
    promised_days: float = PromisedOpt,
    transactions: bool = typer.Option(
        False,
        "--transactions",
        help="INPUT is invoice lines (one id column = the SKU, --target-col = quantity, optional InvoiceNo): "
        "cancellations, returns and fees are left out and lines are summed per period.",
    ),
    query: str = QueryOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Forecast, plan inventory and compare with the previous run of the dataset: one stored run."""
    from forecasting.data import future_frame
    from forecasting.inventory.inputs import read_open_orders, read_params
    from forecasting.inventory.leadtime import po_lead_times
    from forecasting.io import read_table
    from forecasting.pipeline import attributes_from, pipeline_steps, progress_bar, run_pipeline

    ids = split_cols(id_cols)
    cols = split_cols(exog_cols)
    if price_col and price_col not in cols:
        cols.append(price_col)
    if transactions:
        raw, long, notes, pfreq, exog, descriptions = _transactions(
            input, query, ids, date_col, target_col, price_col, desc_col, freq
        )
    else:
        raw, long, report, pfreq, exog = read_long(
            input, query, id_cols, date_col, target_col, ",".join(cols), freq
        )
        notes, descriptions = report.lines(), _descriptions(raw, ids, desc_col)
    X_df = future_frame(read_table(future), ids, date_col, exog, pfreq) if future else None
    lead_times = (
        po_lead_times(read_table(po_history), vendor_col, po_date_col, split_cols(receipt_col) or None)
        if po_history
        else None
    )
    name = dataset or Path(str(input).split("::")[0]).name.split(".")[0]
    with progress_bar(pipeline_steps(model), f"pipeline on {name}", quiet=as_json) as step:
        result = run_pipeline(
            long,
            pfreq,
            horizon,
            descriptions=descriptions,
            dataset=name,
            as_of=as_of,
            model=model,
            windows=windows,
            progress=step,
            X_df=X_df,
            attributes=attributes_from(raw, ids, split_cols(attr_cols)),
            stock=read_params(read_table(stock), ids) if stock else None,
            open_po=read_open_orders(read_table(open_pos), ids) if open_pos else None,
            lead_times=lead_times,
            promised_days=promised_days,
            price_col=price_col,
            notes=notes,
        )
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    for line in result.notes:
        console.print(line)
    out_console.print(
        f"[bold]pipeline[/] {name}: {summary['series']:,} series x {summary['periods']:,} periods up to "
        f"{summary['as_of']}; horizon {horizon}"
    )
    out_console.print(
        "demand classes: " + ", ".join(f"{k} {v:,}" for k, v in summary["demand_classes"].items())
    )
    print_table(
        result.metrics[["model", "mae", "rmsse", "smape", "bias", "coverage", "seconds"]], title="backtest"
    )
    orders = result.orders[result.orders["status"] == "order now"]
    out_console.print(
        f"order now: {len(orders):,} SKUs; assumed: {', '.join(sorted(result.assumed)) or 'nothing'}"
    )
    if len(result.changes):
        moved = result.changes[result.changes["driver"] != "stable"]
        out_console.print(f"forecast changes vs the previous run: {len(moved):,} SKUs moved 5% or more")
        print_table(
            moved[["unique_id", "total_before", "total_now", "change_pct", "driver", "driver_note"]],
            title="largest forecast changes",
            max_rows=10,
            digits=1,
        )
    out_console.print(f"saved as run {result.run_id} (active); {summary['seconds']} s")


@guarded
def index(as_json: bool = JsonOpt) -> None:
    """Build or update the knowledge-base index from the active pipeline run (only changed documents
    are embedded again)."""
    from forecasting.pipeline import progress_bar
    from rag.knowledge import INDEX_STEPS, update_index

    with progress_bar(INDEX_STEPS, "reading the active run", quiet=as_json) as step:
        stats = update_index(progress=step)
    if as_json:
        print_json(stats)
        return
    out_console.print(
        f"index {stats['folder']}: {stats['documents']:,} documents (run {stats['run_id']}); "
        f"added {stats['added']:,}, updated {stats['updated']:,}, removed {stats['removed']:,}, "
        f"unchanged {stats['unchanged']:,}; embedded {stats['embedded']:,}; {stats['seconds']} s"
    )
