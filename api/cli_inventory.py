"""`stockpilot kpis`, `recommend`, `simulate` and `leadtimes`: inventory numbers from the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from api.cli_common import (
    DateColOpt,
    ExogColsOpt,
    FreqOpt,
    FutureOpt,
    IdColsOpt,
    InputArg,
    JsonOpt,
    QueryOpt,
    TargetColOpt,
    console,
    guarded,
    option_group,
    print_json,
    print_table,
    read_long,
    split_cols,
)
from forecasting.data import LoadReport, future_frame
from forecasting.errors import InputError
from forecasting.inventory.classes import parse_class_levels
from forecasting.inventory.inputs import InventoryDefaults, read_open_orders, read_params, resolve_params
from forecasting.inventory.leadtime import (
    DEFAULT_PROMISED_DAYS,
    LeadTimeSampler,
    lead_time_stats,
    open_orders,
    po_lead_times,
)
from forecasting.inventory.paths import period_days, with_residual_sigma
from forecasting.inventory.recommend import InventoryPlanner, PolicySettings
from forecasting.inventory.simulate import SimulationSettings, align_forecast, demand_matrices, simulate
from forecasting.io import read_table, write_table
from forecasting.store import ResultsStore

# inventory options (None = use the documented default and report it as assumed)
ForecastOpt = typer.Option(
    None, "--forecast", help="Forecast table (unique_id, ds, yhat, yhat_lower, yhat_upper); else one is made."
)
ResidualsOpt = typer.Option(
    None,
    "--residuals",
    help="Backtest errors (unique_id, ds, y, yhat[, cutoff]): sigma from lead-time error sums.",
)
ResidualPeriodsOpt = typer.Option(
    None,
    "--residual-periods",
    help="When the forecast is made here: also forecast from this many periods back and take the demand "
    "sigma from those lead-time errors (default 28 D, 8 W, 3 MS; 0: sigma from the forecast interval).",
)
ModelOpt = typer.Option(
    "auto", "--model", help="Forecast model when no --forecast is given (auto or a name)."
)
HorizonOpt = typer.Option(None, "--horizon", min=1, help="Forecast periods (default: 56 D, 12 W, 4 MS).")
StockOpt = typer.Option(
    None,
    "--stock",
    help="Per-SKU table (id columns + on_hand, backorders, unit_cost, price, order_cost, holding_rate, "
    "stockout_cost, lead_time_days, lead_time_std_days, pack_size, moq, service_level, vendor).",
)
OpenPosOpt = typer.Option(
    None,
    "--open-pos",
    help="Open purchase orders: id columns + quantity (rows with a ReceivingDate are done).",
)
PoHistoryOpt = typer.Option(
    None, "--po-history", help="Purchase-order history (VendorNumber, PODate, ReceivingDate/InvoiceDate)."
)
VendorColOpt = typer.Option("VendorNumber", "--vendor-col", help="Vendor column of the PO history.")
PoDateColOpt = typer.Option("PODate", "--po-date-col", help="PO date column of the PO history.")
ReceiptColOpt = typer.Option(
    None,
    "--receipt-col",
    help="Receipt date column(s) of the PO history (default ReceivingDate,InvoiceDate).",
)
PromisedOpt = typer.Option(
    None, "--promised-days", help=f"Promised lead time in days (default {DEFAULT_PROMISED_DAYS:g}, assumed)."
)
PriceColOpt = typer.Option(
    None, "--price-col", help="INPUT column with the unit selling price (e.g. sell_price)."
)
LocationColOpt = typer.Option(
    None, "--location-col", help="Id column that names the location (e.g. store_id)."
)
ServiceOpt = typer.Option(
    None, "--service-level", help="One cycle service level for every SKU (default: per ABC class)."
)
ClassServiceOpt = typer.Option(
    None, "--class-service", help="Service levels per ABC class, e.g. A=0.98,B=0.95,C=0.90 (the default)."
)
FillRateOpt = typer.Option(
    None, "--fill-rate", help="Target fill rate: safety stock from the fill rate instead."
)
AbcOpt = typer.Option("pareto", "--abc-method", help="ABC classes: pareto (80/15/5 of revenue) or kmeans.")
MaxCoverOpt = typer.Option(90.0, "--max-cover-days", help="Cap on an order quantity, in days of demand.")
OrderCostOpt = typer.Option(None, "--order-cost", help="Cost per order (default 10).")
HoldingOpt = typer.Option(
    None, "--holding-rate", help="Holding cost per year as a share of unit cost (0.25)."
)
UnitCostOpt = typer.Option(None, "--unit-cost", help="Unit cost for all SKUs (default price x 0.7, or 1).")
StockoutCostOpt = typer.Option(None, "--stockout-cost", help="Cost per unit short (default the lost margin).")
LeadOpt = typer.Option(None, "--lead-time-days", help="Lead time in days (default: PO history, else 14).")
LeadSdOpt = typer.Option(None, "--lead-time-std-days", help="Lead-time standard deviation in days (3).")
PackOpt = typer.Option(None, "--pack-size", help="Pack size for all SKUs (default 1).")
MoqOpt = typer.Option(None, "--moq", help="Minimum order quantity for all SKUs (default none).")
OutputOpt = typer.Option(None, "--output", help="Write the full table (.csv, .csv.gz or .parquet).")
DEFAULT_HORIZON = {"D": 56, "W": 12, "MS": 4}
DEFAULT_RESIDUAL_PERIODS = {"D": 28, "W": 8, "MS": 3}


@dataclass
class Loaded:
    raw: pd.DataFrame
    long: pd.DataFrame
    report: LoadReport
    freq: str
    ids: list[str]
    exog: list[str]
    report_extra: list[str] = field(default_factory=list)


def register(app: typer.Typer) -> None:
    app.command("kpis")(kpis)
    app.command("recommend")(recommend)
    app.command("simulate")(simulate_cmd)
    app.command("leadtimes")(leadtimes)


def _load(input: str, query, id_cols, date_col, target_col, exog_cols, freq) -> Loaded:
    raw, long, report, pfreq, exog = read_long(input, query, id_cols, date_col, target_col, exog_cols, freq)
    ids = split_cols(id_cols)
    if (long["y"] < 0).any():
        first = long.loc[long["y"] < 0, "unique_id"].iloc[0]
        raise InputError(f"demand column {target_col!r} has negative values (e.g. series {first!r})")
    return Loaded(raw, long, report, pfreq, ids, exog)


def _prices(data: Loaded, price_col: str | None, date_col: str, before: pd.Timestamp | None = None):
    """Last known positive selling price per SKU from INPUT's `price_col`."""
    if not price_col:
        return None
    if price_col not in data.raw.columns:
        raise InputError(f"price column {price_col!r} is not in the input")
    raw = data.raw
    uid = raw[data.ids[0]].astype(str)
    for col in data.ids[1:]:
        uid = uid + "/" + raw[col].astype(str)
    frame = pd.DataFrame(
        {"uid": uid, "ds": pd.to_datetime(raw[date_col]), "p": pd.to_numeric(raw[price_col], errors="coerce")}
    )
    if before is not None:
        frame = frame[frame["ds"] < before]
    frame = frame[frame["p"] > 0].sort_values("ds", kind="stable")  # empty, zero or negative: not a price
    if frame.empty:
        raise InputError(f"price column {price_col!r} has no positive prices")
    return frame.groupby("uid")["p"].last()


def _defaults(**values) -> InventoryDefaults:
    given = {k for k, v in values.items() if v is not None}
    kwargs = {k: v for k, v in values.items() if v is not None}
    return InventoryDefaults(**kwargs, given=given)


def _po_history(path, vendor_col, po_date_col, receipt_col, promised_days):
    if not path:
        return None, None
    lt = po_lead_times(read_table(path), vendor_col, po_date_col, split_cols(receipt_col) or None)
    return lt, lead_time_stats(lt, promised_days)


def _location_part(location_col: str | None, ids: list[str]) -> int | None:
    if location_col is None:
        return None
    if location_col not in ids:
        raise InputError(f"--location-col {location_col!r} must be one of the id columns ({', '.join(ids)})")
    return ids.index(location_col)


def _forecast(data: Loaded, forecast: str | None, model: str, horizon: int | None, future, id_cols, date_col):
    if forecast:
        return read_table(forecast), f"from {forecast}"
    from forecasting import engine

    key = "W" if data.freq.startswith("W") else data.freq
    h = horizon or DEFAULT_HORIZON.get(key, 12)
    X_df = future_frame(read_table(future), data.ids, date_col, data.exog, data.freq) if future else None
    name = engine_model(model)
    result = engine.forecast(data.long, data.freq, h, name, X_df)
    return result.forecast, f"{name} model, {h} periods"


def engine_model(model: str) -> str:
    """The one engine model named by --model (auto or a name)."""
    from forecasting import engine

    names = engine.resolve_models(model)
    if len(names) != 1:
        raise InputError("give one model (auto or a name)")
    return names[0]


def _past_errors(data: Loaded, model: str, periods: int | None, before: pd.Timestamp, X_df=None):
    """Errors of the engine's forecast issued `periods` before `before`, against what was then sold:
    backtest residuals (unique_id, ds, y, yhat) for the lead-time sigma; None when disabled."""
    key = "W" if data.freq.startswith("W") else data.freq
    periods = DEFAULT_RESIDUAL_PERIODS.get(key, 3) if periods is None else periods
    if periods <= 0:
        return None, ""
    from forecasting import engine

    dates = np.sort(data.long.loc[data.long["ds"] < before, "ds"].unique())
    if len(dates) <= 2 * periods:
        return None, ""
    cut = pd.Timestamp(dates[-periods])
    known = data.long[data.long["ds"] >= cut]
    if X_df is None and data.exog:
        X_df = known[["unique_id", "ds", *data.exog]].reset_index(drop=True)
    elif X_df is not None:
        X_df = X_df[X_df["ds"] >= cut].reset_index(drop=True)
    past = engine.forecast(data.long[data.long["ds"] < cut], data.freq, periods, model, X_df).forecast
    errors = past.merge(known[known["ds"] < before][["unique_id", "ds", "y"]], on=["unique_id", "ds"])
    return errors, f", sigma from lead-time errors of a forecast issued {cut:%Y-%m-%d}"


def _plan(
    data: Loaded,
    fc: pd.DataFrame,
    stock,
    open_pos,
    po_hist,
    promised_days,
    vendor_col,
    po_date_col,
    receipt_col,
    price_col,
    date_col,
    location_col,
    settings: PolicySettings,
    defaults: InventoryDefaults,
) -> tuple[InventoryPlanner, pd.DataFrame | None]:
    fc = _match_forecast(fc, data)
    stock_df = read_params(read_table(stock), data.ids) if stock else None
    open_qty = read_open_orders(read_table(open_pos), data.ids) if open_pos else None
    _, stats = _po_history(po_hist, vendor_col, po_date_col, receipt_col, promised_days)
    prices = _prices(data, price_col, date_col)
    planner = InventoryPlanner(settings, defaults).fit(
        fc,
        data.freq,
        history=data.long,
        stock=stock_df,
        open_po=open_qty,
        prices=prices,
        vendor_stats=stats,
        location_part=_location_part(location_col, data.ids),
    )
    return planner, stats


def _match_forecast(fc: pd.DataFrame, data: Loaded) -> pd.DataFrame:
    """Keep the forecast rows of the input's series; fail when they share none."""
    if "unique_id" not in fc.columns:
        raise InputError("forecast table is missing column(s): unique_id")
    known = set(data.long["unique_id"].unique())
    ids = fc["unique_id"].astype(str)
    fc = fc[ids.isin(known)]
    if fc.empty:
        raise InputError("the forecast table has none of the input's series (check --id-cols)")
    start, end = pd.to_datetime(fc["ds"]).min(), data.long["ds"].max()
    if pd.notna(start) and start <= end:
        data.report_extra.append(
            f"warning: the forecast starts {start:%Y-%m-%d}, not after the history's end {end:%Y-%m-%d}"
        )
    lacking = len(known) - fc["unique_id"].nunique()
    if lacking:
        data.report_extra.append(f"{lacking} series of the input have no forecast rows and are left out")
    return fc


def _settings(service_level, class_service, fill_rate, abc_method, max_cover_days) -> PolicySettings:
    return PolicySettings(
        service_level=service_level,
        class_levels=parse_class_levels(class_service),
        fill_rate=fill_rate,
        abc_method=abc_method,
        max_cover_days=max_cover_days,
    )


def _notes(data: Loaded, source: str, planner: InventoryPlanner) -> list[str]:
    notes = [*data.report.lines(), *data.report_extra, f"forecast: {source}"]
    notes += [f"assumed {k}: {v}" for k, v in planner.assumed_.items()]
    return notes


# the inputs of kpis and recommend (they share one body, _run_planner)
planner_options = option_group(
    "p",
    {
        "input": (str, InputArg),
        "id_cols": (str, IdColsOpt),
        "date_col": (str, DateColOpt),
        "target_col": (str, TargetColOpt),
        "exog_cols": (str, ExogColsOpt),
        "future": (str, FutureOpt),
        "freq": (str, FreqOpt),
        "forecast": (str, ForecastOpt),
        "residuals": (str, ResidualsOpt),
        "residual_periods": (int, ResidualPeriodsOpt),
        "model": (str, ModelOpt),
        "horizon": (int, HorizonOpt),
        "stock": (str, StockOpt),
        "open_pos": (str, OpenPosOpt),
        "po_history": (str, PoHistoryOpt),
        "vendor_col": (str, VendorColOpt),
        "po_date_col": (str, PoDateColOpt),
        "receipt_col": (str, ReceiptColOpt),
        "promised_days": (float, PromisedOpt),
        "price_col": (str, PriceColOpt),
        "location_col": (str, LocationColOpt),
        "service_level": (float, ServiceOpt),
        "class_service": (str, ClassServiceOpt),
        "fill_rate": (float, FillRateOpt),
        "abc_method": (str, AbcOpt),
        "max_cover_days": (float, MaxCoverOpt),
        "order_cost": (float, OrderCostOpt),
        "holding_rate": (float, HoldingOpt),
        "unit_cost": (float, UnitCostOpt),
        "stockout_cost": (float, StockoutCostOpt),
        "lead_time_days": (float, LeadOpt),
        "lead_time_std_days": (float, LeadSdOpt),
        "pack_size": (float, PackOpt),
        "moq": (float, MoqOpt),
        "query": (str, QueryOpt),
    },
)


@guarded
@planner_options
def kpis(
    p: dict,
    output: Path = OutputOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Inventory KPIs per SKU: safety stock, reorder point, EOQ, cover, stockout risk, turnover, ABC/XYZ."""
    planner, notes, run_id = _run_planner(p, "inventory_kpis")
    table = planner.kpis_
    if _emit(planner, notes, run_id, "kpis", table, output, as_json):
        return
    show = [
        c
        for c in (
            "unique_id",
            "abc",
            "xyz",
            "demand_per_day",
            "safety_stock",
            "reorder_point",
            "eoq",
            "order_up_to",
            "inventory_position",
            "days_of_cover",
            "stockout_prob",
            "turnover",
            "status",
        )
        if c in table.columns
    ]
    print_table(table[show], title=f"inventory KPIs ({len(table)} SKUs, run {run_id})", digits=2)


@guarded
@planner_options
def recommend(
    p: dict,
    include_all: bool = typer.Option(False, "--all", help="List every SKU, not only those to order now."),
    output: Path = OutputOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Order advice: what to order now (rounded to pack / MOQ) and the latest order date per SKU."""
    planner, notes, run_id = _run_planner(p, "order_advice")
    orders = planner.orders(include_all=include_all)
    if _emit(planner, notes, run_id, "orders", orders, output, as_json):
        return
    show = [
        c
        for c in (
            "unique_id",
            "abc",
            "status",
            "order_qty",
            "latest_order_date",
            "inventory_position",
            "reorder_point",
            "order_up_to",
            "days_of_cover",
            "stockout_prob",
        )
        if c in orders.columns
    ]
    view = orders[show].assign(latest_order_date=orders["latest_order_date"].dt.strftime("%Y-%m-%d"))
    what = "all SKUs" if include_all else f"{len(orders)} SKUs to order now"
    print_table(view, title=f"order advice ({what}, run {run_id})", digits=2)


def _lead_periods(errors: pd.DataFrame, lead_time_days, po_history, p: dict, freq: str) -> float | None:
    """Lead time (periods) over which residual errors are summed: the option, else the PO history's
    pooled mean, else the default; None when the residuals have no dates."""
    if "ds" not in errors.columns:
        return None
    days = lead_time_days
    if days is None and po_history:
        _, stats = _po_history(po_history, p["vendor_col"], p["po_date_col"], p["receipt_col"], None)
        days = float(stats.loc[stats["vendor"] == "ALL", "mean_days"].iloc[0])
    return (days or InventoryDefaults().lead_time_days) / period_days(freq)


def _emit(planner, notes, run_id, key: str, table: pd.DataFrame, output, as_json: bool) -> bool:
    """Write `table` to --output, then print the JSON (True: done) or the notes before the table."""
    if output:
        write_table(table, output)
    if as_json:
        head = {"run_id": run_id, "summary": planner.summary(), "assumed": planner.assumed_}
        print_json({**head, "notes": notes, key: table})
        return True
    for line in notes:
        console.print(line)
    return False


def _run_planner(p: dict, kind: str) -> tuple[InventoryPlanner, list[str], str]:
    """Shared body of kpis and recommend: load, forecast, plan, store."""
    data = _load(
        p["input"], p["query"], p["id_cols"], p["date_col"], p["target_col"], p["exog_cols"], p["freq"]
    )
    defaults = _defaults(
        order_cost=p["order_cost"],
        holding_rate=p["holding_rate"],
        unit_cost=p["unit_cost"],
        stockout_cost=p["stockout_cost"],
        lead_time_days=p["lead_time_days"],
        lead_time_std_days=p["lead_time_std_days"],
        pack_size=p["pack_size"],
        moq=p["moq"],
    )
    settings = _settings(
        p["service_level"], p["class_service"], p["fill_rate"], p["abc_method"], p["max_cover_days"]
    )
    fc, source = _forecast(
        data, p["forecast"], p["model"], p["horizon"], p["future"], p["id_cols"], p["date_col"]
    )
    errors, how = None, ""
    if p["residuals"]:
        errors, how = read_table(p["residuals"]), f", sigma from the errors in {p['residuals']}"
    elif not p["forecast"]:
        model = engine_model(p["model"])
        end = data.long["ds"].max() + pd.tseries.frequencies.to_offset(data.freq)
        errors, how = _past_errors(data, model, p["residual_periods"], end)
    if errors is not None:
        lead = _lead_periods(errors, p["lead_time_days"], p["po_history"], p, data.freq)
        fc = with_residual_sigma(fc, errors, lead)
        source += how
    planner, stats = _plan(
        data,
        fc,
        p["stock"],
        p["open_pos"],
        p["po_history"],
        p["promised_days"],
        p["vendor_col"],
        p["po_date_col"],
        p["receipt_col"],
        p["price_col"],
        p["date_col"],
        p["location_col"],
        settings,
        defaults,
    )
    notes = _notes(data, source, planner)
    store = ResultsStore()
    run_params = {k: v for k, v in p.items() if k not in ("as_json",) and v is not None}
    run_params["assumed"] = planner.assumed_
    run_id = store.new_run(kind, run_params)
    store.save("inventory_kpis", planner.table_, run_id)
    if kind == "order_advice":
        store.save("order_advice", planner.orders(include_all=True), run_id)
    if stats is not None:
        store.save("supplier_lead_times", stats, run_id)
    return planner, notes, run_id


@guarded
def simulate_cmd(
    input: str = InputArg,
    id_cols: str = IdColsOpt,
    date_col: str = DateColOpt,
    target_col: str = TargetColOpt,
    exog_cols: str = ExogColsOpt,
    future: str = FutureOpt,
    freq: str = FreqOpt,
    test_periods: int = typer.Option(28, "--test-periods", min=2, help="Last periods of INPUT to replay."),
    forecast: list[str] = typer.Option(
        None,
        "--forecast",
        help="Forecast table starting on a test date (repeat for refreshed forecasts); else made here.",
    ),
    residuals: str = ResidualsOpt,
    residual_periods: int = ResidualPeriodsOpt,
    model: str = ModelOpt,
    refresh_every: int = typer.Option(
        7, "--refresh-every", min=0, help="Re-forecast every N test periods (0: one forecast at the start)."
    ),
    po_history: str = PoHistoryOpt,
    vendor: str = typer.Option(None, "--vendor", help="Draw lead times from this vendor's POs only."),
    vendor_col: str = VendorColOpt,
    po_date_col: str = PoDateColOpt,
    receipt_col: str = ReceiptColOpt,
    lead_time_days: float = typer.Option(
        None, "--lead-time-days", help="Constant lead time in days (when no --po-history; default 14)."
    ),
    stock: str = StockOpt,
    price_col: str = PriceColOpt,
    service_level: float = typer.Option(0.95, "--service-level", help="Cycle service level of our policy."),
    naive_window_days: int = typer.Option(
        28, "--naive-window-days", min=1, help="Naive moving-average days."
    ),
    naive_cover_days: float = typer.Option(30.0, "--naive-cover-days", help="Naive reorder point in days."),
    start: str = typer.Option("cycle", "--start", help="Initial stock: cycle (s + U*Q) or order_up_to (S)."),
    reps: int = typer.Option(20, "--reps", min=1, help="Replications (lead-time and start draws)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    max_cover_days: float = MaxCoverOpt,
    order_cost: float = OrderCostOpt,
    holding_rate: float = HoldingOpt,
    unit_cost: float = UnitCostOpt,
    stockout_cost: float = StockoutCostOpt,
    pack_size: float = PackOpt,
    moq: float = MoqOpt,
    output: Path = typer.Option(None, "--output", help="Write per-series results (.csv or .parquet)."),
    query: str = QueryOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replay the last TEST periods: our forecast-driven policy vs a naive 28-day-average policy."""
    data = _load(input, query, id_cols, date_col, target_col, exog_cols, freq)
    settings = SimulationSettings(
        service_level=service_level,
        naive_window_days=naive_window_days,
        naive_cover_days=naive_cover_days,
        start=start,
        reps=reps,
        seed=seed,
        max_cover_days=max_cover_days,
    )
    pdays = period_days(data.freq)
    window = max(naive_window_days, settings.censoring.window_days if settings.censoring else 0.0)
    history_periods = max(int(math.ceil(window / pdays)), 1)
    ids, hist, actual, dates = demand_matrices(data.long, test_periods, history_periods)
    notes = list(data.report.lines())
    if po_history:
        lt, _ = _po_history(po_history, vendor_col, po_date_col, receipt_col, None)
        sampler = LeadTimeSampler(vendor).fit(lt)
        lt_note = f"lead times drawn from {po_history}" + (f" (vendor {vendor})" if vendor else "")
    else:
        if vendor:
            raise InputError("--vendor needs --po-history")
        sampler = LeadTimeSampler.constant(lead_time_days or InventoryDefaults().lead_time_days)
        lt_note = f"lead time constant {sampler.mean_:g} days" + ("" if lead_time_days else " (assumed)")
    notes.append(lt_note)
    extra = int(math.ceil(float(np.max(sampler.values_)) / pdays)) + 1
    forecasts, source = _sim_forecasts(
        data, forecast, model, refresh_every, test_periods, extra, dates, future, date_col
    )
    errors, how = None, ""
    if residuals:
        errors, how = read_table(residuals), f", sigma from the errors in {residuals}"
    elif not forecast:
        errors, how = _past_errors(data, engine_model(model), residual_periods, dates[0])
    if errors is not None:
        lead = sampler.mean_ / pdays if "ds" in errors.columns else None
        forecasts = [with_residual_sigma(fc, errors, lead) for fc in forecasts]
        source += how
    notes.append(f"forecast: {source}")
    issues = [align_forecast(fc, ids, dates) for fc in forecasts]
    first = dates[0]
    defaults = _defaults(
        order_cost=order_cost,
        holding_rate=holding_rate,
        unit_cost=unit_cost,
        stockout_cost=stockout_cost,
        pack_size=pack_size,
        moq=moq,
    )
    stock_df = read_params(read_table(stock), data.ids) if stock else None
    params, assumed = resolve_params(ids, defaults, stock_df, _prices(data, price_col, date_col, first))
    for key in ("on_hand", "backorders", "open_po", "lead_time_days", "lead_time_std_days"):
        assumed.pop(key, None)
    result = simulate(actual, hist, issues, params, sampler, data.freq, settings)
    result.settings["forecast"] = source
    result.settings["first_test_date"] = first
    store = ResultsStore()
    run_id = store.new_run("policy_simulation", {**result.settings, "input": str(input), "assumed": assumed})
    sides = (("policy", result.policy), ("baseline", result.baseline), ("change_pct", result.change_pct))
    summary = pd.DataFrame(  # one fact per row: side, metric, value (stable schema for the assistant)
        [{"side": side, "metric": m, "value": v} for side, values in sides for m, v in values.items()]
    )
    store.save("simulation_summary", summary, run_id)
    store.save("simulation_series", result.per_series, run_id)
    if output:
        write_table(result.per_series, output)
    if as_json:
        print_json({**result.to_dict(), "assumed": assumed, "notes": notes, "run_id": run_id})
        return
    for line in notes:
        console.print(line)
    for k, v in assumed.items():
        console.print(f"assumed {k}: {v}")
    frame = pd.DataFrame({"policy": result.policy, "baseline": result.baseline})
    frame["change_pct"] = pd.Series(result.change_pct, dtype=float)
    print_table(frame.reset_index(names="metric"), title=f"policy simulation (run {run_id})", digits=3)


def _sim_forecasts(
    data: Loaded, files, model, refresh_every, test_periods, extra, dates, future, date_col
) -> tuple[list[pd.DataFrame], str]:
    """Forecasts issued during the test window: the files given, or the engine on the history known at
    the start and then every `refresh_every` periods (future exogenous values from INPUT / --future)."""
    if files:
        return [read_table(f) for f in files], f"from {', '.join(files)}"
    from forecasting import engine

    names = engine.resolve_models(model)
    if len(names) != 1:
        raise InputError("give one model (auto or a name)")
    known = None
    if data.exog:
        known = data.long.loc[data.long["ds"] >= dates[0], ["unique_id", "ds", *data.exog]]
        if future:
            more = future_frame(read_table(future), data.ids, date_col, data.exog, data.freq)
            known = pd.concat([known, more[more["ds"] > known["ds"].max()]], ignore_index=True)
        known = known.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    issues = list(range(0, test_periods, refresh_every)) if refresh_every else [0]
    out = []
    for issued in issues:
        cut = dates[issued]
        X_df = None if known is None else known[known["ds"] >= cut].reset_index(drop=True)
        h = test_periods - issued + extra
        out.append(engine.forecast(data.long[data.long["ds"] < cut], data.freq, h, names[0], X_df).forecast)
    when = f"issued at test periods {issues}" if len(issues) > 1 else f"issued at {dates[0]:%Y-%m-%d}"
    return out, f"{names[0]} model, {when}"


@guarded
def leadtimes(
    po_history: str = typer.Argument(..., help="Purchase-order history (CSV, CSV.GZ, Parquet or SQL URL)."),
    vendor_col: str = VendorColOpt,
    po_date_col: str = PoDateColOpt,
    receipt_col: str = ReceiptColOpt,
    promised_days: float = PromisedOpt,
    as_of: str = typer.Option(None, "--as-of", help="Date for open POs (default: the last PO date)."),
    output: Path = OutputOpt,
    query: str = QueryOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Supplier lead times per vendor: mean, std, p50/p90, trend, on-time rate, open POs."""
    lt = po_lead_times(
        read_table(po_history, query), vendor_col, po_date_col, split_cols(receipt_col) or None
    )
    stats = lead_time_stats(lt, promised_days)
    when = pd.Timestamp(as_of) if as_of else lt["po_date"].max()
    pending = open_orders(lt, when)
    stats["open_pos"] = stats["vendor"].map(pending["vendor"].value_counts()).fillna(0).astype(int)
    stats.loc[stats["vendor"] == "ALL", "open_pos"] = len(pending)
    store = ResultsStore()
    run_id = store.new_run(
        "lead_times", {"input": str(po_history), "as_of": when, "promised_days": promised_days}
    )
    store.save("supplier_lead_times", stats, run_id)
    if output:
        write_table(stats, output)
    assumed = {"promised_days": DEFAULT_PROMISED_DAYS} if promised_days is None else {}
    if as_json:
        print_json({"run_id": run_id, "as_of": when, "assumed": assumed, "vendors": stats})
        return
    if assumed:
        console.print(f"assumed promised lead time: {DEFAULT_PROMISED_DAYS:g} days (--promised-days)")
    cols = [
        "vendor",
        "n_pos",
        "mean_days",
        "std_days",
        "p50_days",
        "p90_days",
        "trend_days_per_30d",
        "on_time_rate",
    ]
    view = pd.concat([stats[stats["vendor"] == "ALL"], stats[stats["vendor"] != "ALL"]])
    print_table(
        view[[*cols, "open_pos"]],
        title=f"supplier lead times (as of {when:%Y-%m-%d}, run {run_id})",
        digits=2,
    )
