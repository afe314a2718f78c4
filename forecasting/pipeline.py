"""The whole planning pipeline on any long-format demand table, saved as one "pipeline" run.

`run_pipeline(long_df, freq, horizon, ...)` truncates the data to `as_of`, classifies demand, backtests the
chosen model against baselines, forecasts with 90% intervals, plans inventory with `InventoryPlanner`
(documented defaults where the data has no costs, stock or lead times; every assumed value is listed),
derives order advice and supplier lead-time statistics (when a purchase-order history is given), compares
the forecast with the previous pipeline run of the same dataset, and saves every table under one run id:

    demand, demand_classes, backtest_metrics, forecasts, sku_descriptions, sku_attributes (long form:
    unique_id, attribute, value), inventory_kpis, order_advice, supplier_lead_times, forecast_changes,
    forecast_attention (when the engine's result carries one).

The active run (the one the assistant, documents and API read) is recorded in `<home>/active_run.json`;
`activate_run` switches it atomically and keeps the previous id for a rollback. A new pipeline run is
activated unless `activate=False`.

Forecast changes: per SKU, the next-horizon total of this run against the previous run's, with the likely
driver when the data tells: `price` (the mean price over the horizon moved against demand by 5% or more),
`event` (more or fewer event periods in the horizon), `trend` (demand since the previous run came in 10% or
more above or below what it forecast), `model` (another model was chosen), `stable` (less than 5% change),
else `other`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from forecasting import engine
from forecasting.classify import classify_demand
from forecasting.errors import InputError
from forecasting.inventory.inputs import InventoryDefaults
from forecasting.inventory.leadtime import lead_time_stats
from forecasting.inventory.recommend import InventoryPlanner, PolicySettings
from forecasting.io import atomic_write_text
from forecasting.settings import get_settings
from forecasting.store import ResultsStore

RUN_KIND = "pipeline"
BASELINES = ("snaive", "ma", "sba")
ATTRIBUTE_NAMES = {
    "item_id": "item",
    "item": "item",
    "store_id": "store",
    "store": "store",
    "location": "store",
    "cat_id": "category",
    "category": "category",
    "dept_id": "department",
    "department": "department",
    "state_id": "state",
    "state": "state",
    "vendor": "supplier",
    "supplier": "supplier",
}
"""Id or attribute columns recognised as SKU attributes, and the name they get in `sku_attributes`."""
PRICE_THRESHOLD_PCT = 5.0
SURPRISE_THRESHOLD_PCT = 10.0
STABLE_PCT = 5.0
CHANGE_COLUMNS = [
    "unique_id",
    "total_now",
    "total_before",
    "change",
    "change_pct",
    "previous_run_id",
    "previous_as_of",
    "model_now",
    "model_before",
    "actual_since",
    "forecast_since",
    "surprise_pct",
    "price_now",
    "price_before",
    "price_change_pct",
    "event_periods_now",
    "event_periods_before",
    "driver",
    "driver_note",
]

Progress = Callable[[str], None]


@dataclass
class PipelineResult:
    """Everything one pipeline run produced (the same tables are in the results store under `run_id`)."""

    run_id: str
    dataset: str
    freq: str
    horizon: int
    as_of: pd.Timestamp
    demand: pd.DataFrame
    classes: pd.DataFrame
    metrics: pd.DataFrame
    forecast: pd.DataFrame
    kpis: pd.DataFrame
    orders: pd.DataFrame
    changes: pd.DataFrame
    supplier_lead_times: pd.DataFrame | None = None
    attention: pd.DataFrame | None = None
    assumed: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """Headline figures for `--json` output and logs."""
        counts = self.classes["demand_class"].value_counts()
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "freq": self.freq,
            "horizon": self.horizon,
            "as_of": self.as_of.date().isoformat(),
            "series": int(self.demand["unique_id"].nunique()),
            "periods": int(self.demand["ds"].nunique()),
            "demand_classes": {str(k): int(v) for k, v in counts.items()},
            "backtest": self.metrics.to_dict(orient="records"),
            "forecast_rows": len(self.forecast),
            "to_order_now": int((self.kpis["status"] == "order now").sum()),
            "changed_skus": int((self.changes["driver"] != "stable").sum()) if len(self.changes) else 0,
            "assumed": self.assumed,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
        }


def pipeline_steps(model: str = "auto", baselines: tuple[str, ...] = BASELINES) -> int:
    """How many progress messages a run sends (for a progress bar's total)."""
    models = dict.fromkeys([model, *baselines])
    fit = 2 * len(engine.AUTO_CANDIDATES) if model == "auto" else 1
    return 5 + len(models) + fit


@contextmanager
def progress_bar(total: int, first: str, quiet: bool = False) -> Iterator[Progress]:
    """A Rich progress bar on stderr (transient); yields the `progress(message, total=None)` callback that
    advances it (a `total` resets the bar's length, for work whose size is learnt on the way)."""
    from rich.console import Console
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    console = Console(stderr=True, quiet=quiet)
    with RichProgress(*columns, console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task(first, total=total)

        def step(message: str, total: int | None = None) -> None:
            bar.update(task, description=message, advance=1, total=total)

        yield step


def run_pipeline(
    long_df: pd.DataFrame,
    freq: str,
    horizon: int,
    *,
    descriptions: pd.Series | None = None,
    dataset: str = "custom",
    as_of: str | pd.Timestamp | None = None,
    model: str = "auto",
    windows: int = 1,
    progress: Progress | None = None,
    store: ResultsStore | None = None,
    X_df: pd.DataFrame | None = None,
    attributes: pd.DataFrame | None = None,
    prices: pd.Series | None = None,
    stock: pd.DataFrame | None = None,
    open_po: pd.Series | None = None,
    lead_times: pd.DataFrame | None = None,
    promised_days: float | None = None,
    defaults: InventoryDefaults | None = None,
    policy: PolicySettings | None = None,
    baselines: tuple[str, ...] = BASELINES,
    price_col: str | None = None,
    notes: list[str] | None = None,
    activate: bool = True,
) -> PipelineResult:
    """Run the pipeline on `long_df` (unique_id, ds, y, exogenous columns) and save it as one run.

    `descriptions` (Series unique_id -> text) and `attributes` (unique_id + columns such as store_id,
    cat_id) describe the SKUs; `X_df` holds known future exogenous values (else, with `as_of` before the
    data's end, the rows after `as_of` supply them); `prices` are selling prices per SKU (else the last
    positive value of `price_col`, or of an exogenous column named like "price"); `stock`, `open_po`,
    `lead_times` (po_lead_times() output) feed the planner, whose missing inputs take `defaults`.
    """
    start = time.perf_counter()
    say = progress or (lambda _message: None)
    store = store or ResultsStore()
    notes = list(notes or [])
    demand, future, as_of_ts = _prepare(long_df, horizon, as_of, X_df, notes)
    exog = [c for c in demand.columns if c not in ("unique_id", "ds", "y")]
    say("classifying demand")
    classes = classify_demand(demand[["unique_id", "ds", "y"]])
    if len(engine.resolve_models(model)) != 1:
        raise InputError("give one model (auto or a name)")
    models = list(
        dict.fromkeys([model, *engine.resolve_models(",".join(baselines))] if baselines else [model])
    )
    metrics, _ = engine.backtest(demand, freq, horizon, windows, models, progress=say)
    result = engine.forecast(demand, freq, horizon, model, future, progress=say)
    fc = result.forecast
    say("planning inventory")
    price_col = price_col or next((c for c in exog if "price" in c.lower()), None)
    if prices is None and price_col:
        prices = last_prices(demand, price_col)
    stats = lead_time_stats(lead_times, promised_days) if lead_times is not None else None
    planner = InventoryPlanner(policy, defaults or InventoryDefaults()).fit(
        fc, freq, history=demand, stock=stock, open_po=open_po, prices=prices, vendor_stats=stats
    )
    say("comparing with the previous run")
    previous = previous_run(store, dataset)
    changes = pd.DataFrame(columns=CHANGE_COLUMNS)
    if previous is not None:
        before = store.load("forecasts", previous)
        if len(before):
            prev_as_of = _run_params(store, previous).get("as_of")
            features = demand if future is None else pd.concat([demand, future], ignore_index=True)
            changes = forecast_changes(fc, before, features, previous, prev_as_of)
    say("saving results")
    params = {
        "dataset": dataset,
        "freq": freq,
        "horizon": horizon,
        "as_of": as_of_ts.date().isoformat(),
        "model": model,
        "windows": windows,
        "baselines": list(baselines),
        "series": int(demand["unique_id"].nunique()),
        "exog": exog,
        "assumed": planner.assumed_,
        "notes": notes,
    }
    run_id = store.new_run(RUN_KIND, params)
    store.save("demand", demand[["unique_id", "ds", "y"]], run_id)
    store.save("demand_classes", classes, run_id)
    store.save("backtest_metrics", metrics, run_id)
    store.save("forecasts", fc, run_id)
    if descriptions is not None and len(descriptions):
        desc = descriptions.astype(str).rename("description").rename_axis("unique_id").reset_index()
        desc = desc[desc["unique_id"].isin(set(demand["unique_id"]))]
        store.save("sku_descriptions", desc, run_id)
    attrs = attribute_table(attributes)
    if attrs is not None:
        store.save("sku_attributes", attrs, run_id)
    kpis = planner.table_
    orders = planner.orders(include_all=True)
    store.save("inventory_kpis", kpis, run_id)
    store.save("order_advice", orders, run_id)
    if stats is not None:
        store.save("supplier_lead_times", stats, run_id)
    if len(changes):
        store.save("forecast_changes", changes, run_id)
    attention = getattr(result, "attention", None)
    if isinstance(attention, pd.DataFrame) and len(attention):
        store.save("forecast_attention", attention, run_id)
    else:
        attention = None
    if activate:
        activate_run(run_id, store)
    return PipelineResult(
        run_id=run_id,
        dataset=dataset,
        freq=freq,
        horizon=horizon,
        as_of=as_of_ts,
        demand=demand,
        classes=classes,
        metrics=metrics,
        forecast=fc,
        kpis=kpis,
        orders=orders,
        changes=changes,
        supplier_lead_times=stats,
        attention=attention,
        assumed=planner.assumed_,
        notes=notes,
        seconds=time.perf_counter() - start,
    )


def _prepare(
    long_df: pd.DataFrame, horizon: int, as_of, X_df: pd.DataFrame | None, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.Timestamp]:
    """Validate, cut at `as_of`, and take future exogenous values from after `as_of` when none are given."""
    missing = [c for c in ("unique_id", "ds", "y") if c not in long_df.columns]
    if missing:
        raise InputError(f"demand table is missing column(s): {', '.join(missing)}")
    if horizon < 1:
        raise InputError(f"horizon must be at least 1, got {horizon}")
    df = long_df.assign(unique_id=long_df["unique_id"].astype(str), ds=pd.to_datetime(long_df["ds"]))
    end = df["ds"].max()
    if as_of is None:
        cut = end
    else:
        try:
            cut = pd.Timestamp(as_of)
        except (TypeError, ValueError):
            raise InputError(f"--as-of {as_of!r} is not a date (use YYYY-MM-DD)") from None
        if cut < df["ds"].min():
            raise InputError(
                f"as-of date {cut:%Y-%m-%d} is before the data starts ({df['ds'].min():%Y-%m-%d})"
            )
    exog = [c for c in df.columns if c not in ("unique_id", "ds", "y")]
    later = df[df["ds"] > cut]
    df = df[df["ds"] <= cut].reset_index(drop=True)
    if (df["y"] < 0).any():
        first = df.loc[df["y"] < 0, "unique_id"].iloc[0]
        raise InputError(f"demand has negative values (e.g. series {first!r})")
    from forecasting.data import require_length

    n_before = df["unique_id"].nunique()
    df = require_length(df, 2 * horizon + 1)
    short = n_before - df["unique_id"].nunique()
    if short:
        notes.append(f"{short} series shorter than {2 * horizon + 1} periods left out")
    if X_df is None and exog and len(later):
        X_df = later.groupby("unique_id", sort=False).head(horizon)[["unique_id", "ds", *exog]]
        X_df = X_df[X_df["unique_id"].isin(set(df["unique_id"]))].reset_index(drop=True)
    return df, X_df, pd.Timestamp(df["ds"].max())


def last_prices(demand: pd.DataFrame, price_col: str) -> pd.Series | None:
    """Last positive price per SKU in `price_col`; None when no SKU has one, the default for SKUs without."""
    values = pd.to_numeric(demand[price_col], errors="coerce")
    known = demand.loc[values > 0, ["unique_id"]].assign(p=values[values > 0])
    if known.empty:
        return None
    last = known.groupby("unique_id")["p"].last()
    ids = demand["unique_id"].unique()
    if len(last) < len(ids):  # the planner needs all or none: fill the rest with the median price
        last = last.reindex(ids).fillna(float(last.median()))
    return last


def attribute_table(attributes: pd.DataFrame | None) -> pd.DataFrame | None:
    """SKU attributes in long form (unique_id, attribute, value); known columns renamed (store_id: store)."""
    if attributes is None or attributes.empty or "unique_id" not in attributes.columns:
        return None
    frame = attributes.drop_duplicates("unique_id").rename(columns=ATTRIBUTE_NAMES)
    cols = [c for c in dict.fromkeys(frame.columns) if c != "unique_id"]
    if not cols:
        return None
    frame = frame.loc[:, ~frame.columns.duplicated()]
    out = frame.melt(id_vars="unique_id", value_vars=cols, var_name="attribute", value_name="value")
    out = out.dropna(subset=["value"])
    out["value"] = out["value"].astype(str)
    return out.reset_index(drop=True)


def attributes_from(
    raw: pd.DataFrame, id_cols: list[str], extra: list[str] | None = None
) -> pd.DataFrame | None:
    """SKU attributes from a raw table: the id columns of a multi-column id plus `extra` columns and any
    column named like a known attribute (cat_id, dept_id, store_id, ...), first value per series."""
    cols = [c for c in dict.fromkeys([*(id_cols if len(id_cols) > 1 else []), *(extra or [])])]
    cols += [c for c in raw.columns if c in ATTRIBUTE_NAMES and c not in cols and c not in id_cols]
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise InputError(f"attribute column(s) not in the input: {', '.join(missing)}")
    if not cols:
        return None
    uid = raw[id_cols].astype(str).agg("/".join, axis=1) if len(id_cols) > 1 else raw[id_cols[0]].astype(str)
    frame = raw[cols].assign(unique_id=uid.to_numpy())
    return frame.drop_duplicates("unique_id")[["unique_id", *cols]].reset_index(drop=True)


# ---------------------------------------------------------------- forecast changes


def previous_run(store: ResultsStore, dataset: str, before: str | None = None) -> str | None:
    """The latest pipeline run of `dataset` (created before run `before`, when given)."""
    runs = store.runs(RUN_KIND)
    if runs.empty:
        return None
    runs = runs.sort_values("created_at", ascending=False)
    if before is not None and before in set(runs["run_id"]):
        created = runs.loc[runs["run_id"] == before, "created_at"].iloc[0]
        runs = runs[runs["created_at"] < created]
    for row in runs.itertuples():
        if json.loads(row.params or "{}").get("dataset") == dataset:
            return row.run_id
    return None


def _run_params(store: ResultsStore, run_id: str) -> dict:
    runs = store.runs()
    row = runs[runs["run_id"] == run_id]
    return json.loads(row["params"].iloc[0]) if len(row) else {}


def _event_mask(frame: pd.DataFrame) -> pd.Series | None:
    cols = [c for c in frame.columns if c.lower().startswith("event")]
    if not cols:
        return None
    flags = pd.Series(False, index=frame.index)
    for col in cols:
        values = frame[col]
        text = values.astype("string").str.strip().fillna("")
        flags |= ~text.isin(["", "0", "0.0", "nan", "None", "<NA>"])
    return flags


def _window_mean(features: pd.DataFrame, col: str, dates: pd.DataFrame) -> pd.Series:
    """Mean of `col` per SKU over the (unique_id, ds) pairs in `dates`."""
    merged = dates[["unique_id", "ds"]].merge(features[["unique_id", "ds", col]], on=["unique_id", "ds"])
    return pd.to_numeric(merged[col], errors="coerce").groupby(merged["unique_id"]).mean()


def forecast_changes(
    now: pd.DataFrame,
    before: pd.DataFrame,
    features: pd.DataFrame,
    previous_run_id: str,
    previous_as_of: str | None = None,
) -> pd.DataFrame:
    """Per SKU: next-horizon total now vs in the previous run, % change, and the likely driver (with
    different horizons, the totals of their first common number of periods).

    `features` is the demand table (history plus known future exogenous rows): it gives the actual demand
    since the previous run (against what that run forecast for those dates), the mean price over each
    run's forecast dates (a column named like "price") and the number of event periods ("event*" columns).
    """
    before = before.assign(ds=pd.to_datetime(before["ds"]), unique_id=before["unique_id"].astype(str))
    now = now.assign(ds=pd.to_datetime(now["ds"]))
    # runs with different horizons compare their first common number of periods
    k = min(now.groupby("unique_id").size().max(), before.groupby("unique_id").size().max())
    head = lambda fc: fc.sort_values(["unique_id", "ds"]).groupby("unique_id").head(k)  # noqa: E731
    tot_now = head(now).groupby("unique_id")["yhat"].sum()
    tot_before = head(before).groupby("unique_id")["yhat"].sum()
    ids = tot_now.index.intersection(tot_before.index)
    if not len(ids):
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    out = pd.DataFrame(index=pd.Index(ids, name="unique_id"))
    out["total_now"] = tot_now.reindex(ids)
    out["total_before"] = tot_before.reindex(ids)
    out["change"] = out["total_now"] - out["total_before"]
    out["change_pct"] = np.where(
        out["total_before"] > 0,
        100.0 * out["change"] / out["total_before"].where(out["total_before"] > 0),
        np.nan,
    )
    out["previous_run_id"] = previous_run_id
    out["previous_as_of"] = previous_as_of
    model_of = lambda fc: fc.groupby("unique_id")["model"].first() if "model" in fc.columns else None  # noqa: E731
    out["model_now"] = model_of(now).reindex(ids) if "model" in now.columns else None
    out["model_before"] = model_of(before).reindex(ids) if "model" in before.columns else None
    # actual demand since the previous run against that run's forecast for the same dates
    hist = features[["unique_id", "ds", "y"]].dropna(subset=["y"])
    seen = before[["unique_id", "ds", "yhat"]].merge(hist, on=["unique_id", "ds"])
    seen = seen[seen["ds"] < now["ds"].min()]
    actual = seen.groupby("unique_id")["y"].sum().reindex(ids)
    expected = seen.groupby("unique_id")["yhat"].sum().reindex(ids)
    out["actual_since"] = actual
    out["forecast_since"] = expected
    out["surprise_pct"] = 100.0 * (actual - expected) / expected.where(expected > 0)
    price_col = next((c for c in features.columns if "price" in c.lower()), None)
    if price_col:
        out["price_now"] = _window_mean(features, price_col, now).reindex(ids)
        out["price_before"] = _window_mean(features, price_col, before).reindex(ids)
        out["price_change_pct"] = 100.0 * (
            out["price_now"] / out["price_before"].where(out["price_before"] > 0) - 1
        )
    else:
        out["price_now"] = out["price_before"] = out["price_change_pct"] = np.nan
    events = _event_mask(features)
    if events is not None:
        flagged = features.loc[events, ["unique_id", "ds"]]

        known = features[["unique_id", "ds"]]

        def count(fc: pd.DataFrame) -> pd.Series:
            """Event periods among a run's forecast dates; NaN where the data does not reach those dates."""
            hit = fc[["unique_id", "ds"]].merge(flagged, on=["unique_id", "ds"])
            covered = fc[["unique_id", "ds"]].merge(known, on=["unique_id", "ds"]).groupby("unique_id").size()
            n = hit.groupby("unique_id").size().reindex(ids, fill_value=0).astype(float)
            return n.where(covered.reindex(ids, fill_value=0) > 0)

        out["event_periods_now"] = count(now)
        out["event_periods_before"] = count(before)
    else:
        out["event_periods_now"] = out["event_periods_before"] = np.nan
    drivers = [_driver(r) for r in out.itertuples()]
    out["driver"] = [d for d, _ in drivers]
    out["driver_note"] = [n for _, n in drivers]
    out = out.reset_index()
    return (
        out[CHANGE_COLUMNS]
        .sort_values("change", key=lambda s: -s.abs(), kind="stable")
        .reset_index(drop=True)
    )


def _driver(r) -> tuple[str, str]:
    """The likely reason for one SKU's forecast change, with a short note stating the numbers."""
    pct = r.change_pct
    if pd.isna(pct) or abs(pct) < STABLE_PCT:
        if r.total_before == 0 and r.total_now > 0:
            return "trend", "demand appeared where the previous run forecast none"
        return "stable", "less than 5% change"
    sign = np.sign(pct)
    if pd.notna(r.price_change_pct) and abs(r.price_change_pct) >= PRICE_THRESHOLD_PCT:
        if np.sign(r.price_change_pct) == -sign:
            way = "lower" if r.price_change_pct < 0 else "higher"
            return "price", f"mean price over the horizon {abs(r.price_change_pct):.1f}% {way}"
    if (
        pd.notna(r.event_periods_now)
        and pd.notna(r.event_periods_before)
        and r.event_periods_now != r.event_periods_before
    ):
        diff = r.event_periods_now - r.event_periods_before
        if np.sign(diff) == sign:
            now, before = int(r.event_periods_now), int(r.event_periods_before)
            return "event", f"{now} event periods in the horizon (before {before})"
    if (
        pd.notna(r.surprise_pct)
        and abs(r.surprise_pct) >= SURPRISE_THRESHOLD_PCT
        and np.sign(r.surprise_pct) == sign
    ):
        way = "above" if r.surprise_pct > 0 else "below"
        return "trend", f"demand since the previous run {abs(r.surprise_pct):.1f}% {way} its forecast"
    if r.model_now is not None and r.model_before is not None and r.model_now != r.model_before:
        return "model", f"model changed from {r.model_before} to {r.model_now}"
    return "other", "no price, event or demand shift explains it"


# ---------------------------------------------------------------- the active run


def _pointer_path():
    return get_settings().home / "active_run.json"


def _read_pointer() -> dict:
    path = _pointer_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def active_run_id(store: ResultsStore | None = None) -> str | None:
    """The run the assistant, documents and API read: `<home>/active_run.json` when it names a pipeline
    run of this store, else the latest pipeline run; None when there is none."""
    store = store or ResultsStore()
    runs = store.runs(RUN_KIND)
    if runs.empty:
        return None
    pointed = _read_pointer().get("run_id")
    if pointed in set(runs["run_id"]):
        return pointed
    return str(runs.sort_values("created_at", ascending=False)["run_id"].iloc[0])


def activate_run(run_id: str, store: ResultsStore | None = None) -> dict:
    """Make `run_id` the active run (atomic write of the pointer); the previous id is kept for a rollback.

    Returns the pointer: {"run_id", "previous", "activated_at"}.
    """
    store = store or ResultsStore()
    runs = store.runs(RUN_KIND)
    if runs.empty or run_id not in set(runs["run_id"]):
        raise InputError(f"no pipeline run {run_id!r} in the results store")
    current = active_run_id(store)
    pointer = {
        "run_id": run_id,
        "previous": current if current != run_id else _read_pointer().get("previous"),
        "activated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(_pointer_path(), json.dumps(pointer, indent=1))
    return pointer
