"""A read-only view of one pipeline run: the facts every consumer states (assistant, documents, API, report).

    book = FactBook.from_store()                 # the active run (forecasting.pipeline.active_run_id)
    book.sku_facts("85123A")                     # [{"name", "value", "unit", "source"}, ...]
    book.match_skus("white hanging heart")       # [("85123A", 90.0), ...]

Facts follow llm.facts.Fact conventions: unit "%" values are percents (12.5), "ratio" values fractions
(0.125), dates ISO strings with unit "date", quantities "units", durations "days", money "currency"; text
facts (demand class, ABC class, driver) have unit None. Values are rounded once here (units, days and money
to 2 decimals, ratios to 4, percents to 1) so documents and answers state exactly the same numbers.
`source` is the stable document id plus the run, e.g. "sku:85123A@run 1a2b3c4d5e6f".

The forecast total over the horizon carries a 90% interval made of the sums of the per-period bounds (a
conservative interval: it assumes the periods' errors move together).

Beyond the names in the brief: `horizon`, `params`, `assumed` (planner defaults used), `period` (week, day,
month), `source(kind, key)`, `table(name)`, `metrics()`, `categories()`, `stores()`, `skus_with(attribute,
value)`, `group_facts(attribute, value)`, `match_suppliers(text)`, `weekly_reports()`,
`attention(sku)` (the past periods the LSTM's attention weighed most).
Tables are loaded from the store once per FactBook and kept.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.leadtime import ALL_VENDORS
from forecasting.store import ResultsStore

EMPTY_MESSAGE = "no pipeline results yet: run `stockpilot demo` or `stockpilot pipeline`"
PERIOD_WORDS = {"D": "day", "W": "week", "M": "month"}
RECENT_PERIODS = {"day": 28, "week": 4, "month": 3}
TREND_PERIODS = {"day": 28, "week": 8, "month": 3}
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_/\-.]*[A-Za-z0-9]|[A-Za-z0-9]")
ROUND = {"units": 2, "days": 2, "currency": 2, "ratio": 4, "%": 1}


def fact(name: str, value: Any, unit: str | None, source: str) -> dict[str, Any]:
    """One fact as a plain dict, its value rounded for its unit (NaN becomes None)."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        value = pd.Timestamp(value)
        value = None if pd.isna(value) else value.date().isoformat()
        unit = "date"
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not np.isfinite(value):
            value = None
        elif unit in ROUND:
            value = round(value, ROUND[unit])
            value = 0.0 if value == 0 else value
    return {"name": name, "value": value, "unit": unit, "source": source}


class FactBook:
    """Facts of one pipeline run, read from the results store (tables loaded once, then cached)."""

    def __init__(self, store: ResultsStore, run_id: str):
        self.store = store
        self.run_id = run_id
        runs = store.runs("pipeline")
        row = runs[runs["run_id"] == run_id] if not runs.empty else runs
        if row.empty:
            raise InputError(f"no pipeline run {run_id!r} in the results store")
        self.params: dict[str, Any] = json.loads(row["params"].iloc[0] or "{}")
        self.created_at = pd.Timestamp(row["created_at"].iloc[0]).to_pydatetime()
        self.dataset: str = self.params.get("dataset", "custom")
        self.freq: str = self.params.get("freq", "D")
        self.horizon: int = int(self.params.get("horizon", 0))
        self.as_of: str = str(self.params.get("as_of", ""))
        self.assumed: dict[str, Any] = self.params.get("assumed", {})
        self.period = PERIOD_WORDS.get(self.freq[:1], "period")
        self._tables: dict[str, pd.DataFrame] = {}

    @classmethod
    def from_store(cls, store: ResultsStore | None = None, run_id: str | None = None) -> FactBook:
        """The FactBook of `run_id`, else of the active run; InputError when there is no pipeline run."""
        from forecasting.pipeline import active_run_id

        store = store or ResultsStore()
        run_id = run_id or active_run_id(store)
        if run_id is None:
            raise InputError(EMPTY_MESSAGE)
        return cls(store, run_id)

    def __repr__(self) -> str:
        return f"FactBook(run_id={self.run_id!r}, dataset={self.dataset!r}, as_of={self.as_of!r})"

    # ---------------------------------------------------------------- tables
    def table(self, name: str) -> pd.DataFrame:
        """Rows of result table `name` for this run (without the run_id column), loaded once; tables with
        a unique_id are sorted by it (then by date), so one SKU's rows are one slice."""
        if name not in self._tables:
            frame = self.store.load(name, run_id=self.run_id)
            if "run_id" in frame.columns:
                frame = frame.drop(columns="run_id")
            for col in ("ds", "latest_order_date", "first_po", "last_po"):
                if col in frame.columns:
                    frame[col] = pd.to_datetime(frame[col])
            if "unique_id" in frame.columns:
                frame["unique_id"] = frame["unique_id"].astype(str)
                keys = ["unique_id", "ds"] if "ds" in frame.columns else ["unique_id"]
                frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
            self._tables[name] = frame
        return self._tables[name]

    @cached_property
    def _slices(self) -> dict[str, dict[str, tuple[int, int]]]:
        return {}

    def _rows(self, name: str, sku: str) -> pd.DataFrame:
        """Rows of `name` for one SKU: a slice of the sorted table (boundaries found once)."""
        frame = self.table(name)
        bounds = self._slices.get(name)
        if bounds is None:
            bounds = {}
            if len(frame):
                ids = frame["unique_id"].to_numpy()
                keys, starts = np.unique(ids, return_index=True)
                order = np.argsort(starts)
                keys, starts = keys[order], starts[order]
                ends = np.append(starts[1:], len(ids))
                bounds = {str(k): (int(a), int(b)) for k, a, b in zip(keys, starts, ends, strict=True)}
            self._slices[name] = bounds
        start, end = bounds.get(sku, (0, 0))
        return frame.iloc[start:end]

    def _kpi_index(self) -> pd.DataFrame:
        if "_kpis" not in self._tables:
            self._tables["_kpis"] = self.table("inventory_kpis").set_index("unique_id")
        return self._tables["_kpis"]

    @cached_property
    def _kpi_records(self) -> dict[str, dict[str, Any]]:
        return self._kpi_index().to_dict(orient="index")

    @cached_property
    def skus(self) -> list[str]:
        """SKUs (unique ids) with a forecast in this run, sorted."""
        return sorted(self.table("forecasts")["unique_id"].unique().tolist())

    @cached_property
    def _sku_set(self) -> set[str]:
        return set(self.skus)

    @cached_property
    def _descriptions(self) -> dict[str, str]:
        d = self.table("sku_descriptions")
        return dict(zip(d["unique_id"], d["description"].astype(str), strict=False)) if len(d) else {}

    @cached_property
    def _attributes(self) -> dict[str, dict[str, str]]:
        d = self.table("sku_attributes")
        out: dict[str, dict[str, str]] = {}
        for row in d.itertuples(index=False):
            out.setdefault(row.unique_id, {})[row.attribute] = row.value
        return out

    def source(self, kind: str, key: str) -> str:
        """Citation of a fact: the document id and the run, e.g. "sku:85123A@run 1a2b3c4d5e6f"."""
        return f"{kind}:{key}@run {self.run_id}"

    def _check(self, sku: str) -> str:
        if sku not in self._sku_set:
            raise InputError(self.unknown_sku_message(sku))
        return sku

    # ---------------------------------------------------------------- per SKU
    def description(self, sku: str) -> str | None:
        return self._descriptions.get(sku)

    def attributes(self, sku: str) -> dict[str, str]:
        """Category, department, store, item ... when the data gave them (empty dict otherwise)."""
        return dict(self._attributes.get(sku, {}))

    def history(self, sku: str, periods: int | None = None) -> pd.DataFrame:
        """Demand history (ds, y) up to the run's as-of date, the last `periods` when given."""
        rows = self._rows("demand", self._check(sku))[["ds", "y"]]
        return (rows.tail(periods) if periods else rows).reset_index(drop=True)

    def forecast(self, sku: str) -> pd.DataFrame:
        """Forecast rows of one SKU (unique_id, ds, yhat, yhat_lower, yhat_upper, model)."""
        rows = self._rows("forecasts", self._check(sku))
        cols = [
            c for c in ("unique_id", "ds", "yhat", "yhat_lower", "yhat_upper", "model") if c in rows.columns
        ]
        return rows[cols].reset_index(drop=True)

    def kpis(self, sku: str) -> dict[str, Any]:
        """The inventory_kpis row of one SKU as a dict (empty when the planner left it out)."""
        row = self._kpi_records.get(self._check(sku))
        return {"unique_id": sku, **row} if row else {}

    def demand_class(self, sku: str) -> str | None:
        rows = self._rows("demand_classes", self._check(sku))
        return str(rows["demand_class"].iloc[0]) if len(rows) else None

    def change(self, sku: str) -> dict[str, Any]:
        """This SKU's row of forecast_changes (empty dict on a first run)."""
        rows = self._rows("forecast_changes", self._check(sku))
        return rows.iloc[0].to_dict() if len(rows) else {}

    def attention(self, sku: str) -> pd.DataFrame:
        """Past periods the LSTM's attention weighed most for this SKU's forecast (rank, past_ds, weight, y);
        empty when the LSTM did not help forecast it."""
        rows = (
            self._rows("forecast_attention", self._check(sku))
            if len(self.table("forecast_attention"))
            else None
        )
        if rows is None or rows.empty:
            return pd.DataFrame(columns=["rank", "past_ds", "weight", "y"])
        rows = rows.assign(past_ds=pd.to_datetime(rows["past_ds"]))
        return rows.drop(columns="unique_id").sort_values("rank").reset_index(drop=True)

    def sku_facts(self, sku: str) -> list[dict[str, Any]]:
        """Every fact about one SKU, each with name, value, unit and source."""
        self._check(sku)
        src = self.source("sku", sku)
        word = self.period
        facts: list[dict[str, Any]] = [fact("as of", pd.Timestamp(self.as_of), "date", src)]
        desc = self.description(sku)
        if desc:
            facts.append(fact("description", desc, None, src))
        for name, value in self.attributes(sku).items():
            facts.append(fact(name, value, None, src))
        hist = self.history(sku)
        n = RECENT_PERIODS.get(word, 4)
        if len(hist):
            facts.append(fact(f"demand last {word}", float(hist["y"].iloc[-1]), "units", src))
            facts.append(fact(f"demand last {n} {word}s", float(hist["y"].tail(n).sum()), "units", src))
            facts.append(
                fact(
                    f"average demand per {word}, last {n} {word}s",
                    float(hist["y"].tail(n).mean()),
                    "units",
                    src,
                )
            )
        trend = self._trend(hist)
        if trend is not None:
            k = TREND_PERIODS.get(word, 8)
            facts.append(fact(f"demand trend, last {k} {word}s vs the {k} before", trend, "%", src))
        cls = self.demand_class(sku)
        if cls:
            facts.append(fact("demand class", cls, None, src))
        fc = self.forecast(sku)
        if len(fc):
            first = fc.iloc[0]
            facts += [
                fact(f"forecast next {word}", float(first["yhat"]), "units", src),
                fact(f"forecast next {word}, 90% interval low", float(first["yhat_lower"]), "units", src),
                fact(f"forecast next {word}, 90% interval high", float(first["yhat_upper"]), "units", src),
                fact("forecast start", first["ds"], "date", src),
                fact(f"forecast next {len(fc)} {word}s", float(fc["yhat"].sum()), "units", src),
                fact(
                    f"forecast next {len(fc)} {word}s, 90% interval low",
                    float(fc["yhat_lower"].sum()),
                    "units",
                    src,
                ),
                fact(
                    f"forecast next {len(fc)} {word}s, 90% interval high",
                    float(fc["yhat_upper"].sum()),
                    "units",
                    src,
                ),
            ]
            if "model" in fc.columns:
                facts.append(fact("forecast model", str(first["model"]), None, src))
        att = self.attention(sku)
        if len(att):
            top = att.iloc[0]
            facts.append(fact("past period the forecast attends to most", top["past_ds"], "date", src))
            facts.append(fact("attention weight of that period", float(top["weight"]), "ratio", src))
            if pd.notna(top.get("y")):
                facts.append(fact("demand in that period", float(top["y"]), "units", src))
        facts += self._kpi_facts(sku, src)
        facts += self._change_facts(sku, src)
        return facts

    def _trend(self, hist: pd.DataFrame) -> float | None:
        k = TREND_PERIODS.get(self.period, 8)
        if len(hist) < 2 * k:
            return None
        recent, before = hist["y"].iloc[-k:].sum(), hist["y"].iloc[-2 * k : -k].sum()
        return float(100.0 * (recent / before - 1.0)) if before > 0 else None

    def _kpi_facts(self, sku: str, src: str) -> list[dict[str, Any]]:
        k = self.kpis(sku)
        if not k:
            return []
        spec = [
            ("ABC class", "abc", None),
            ("XYZ class", "xyz", None),
            ("service level target", "service_level", "ratio"),
            ("safety stock", "safety_stock", "units"),
            ("reorder point", "reorder_point", "units"),
            ("EOQ", "eoq", "units"),
            ("order-up-to level", "order_up_to", "units"),
            ("on hand", "on_hand", "units"),
            ("open purchase orders", "open_po", "units"),
            ("inventory position", "inventory_position", "units"),
            ("order status", "status", None),
            ("recommended order quantity", "order_qty", "units"),
            ("order value", "order_value", "currency"),
            ("order by", "latest_order_date", "date"),
            ("stockout probability before the next delivery", "stockout_prob", "ratio"),
            ("days of cover", "days_of_cover", "days"),
            ("lead time", "lead_time_days", "days"),
            ("lead time standard deviation", "lead_time_std_days", "days"),
            ("demand per day", "demand_per_day", "units"),
            ("unit cost", "unit_cost", "currency"),
            ("annual holding cost", "holding_cost", "currency"),
        ]
        out = []
        for name, col, unit in spec:
            if col not in k:
                continue
            value = k[col]
            if unit is None:
                value = None if pd.isna(value) else str(value)
            elif unit != "date":
                value = float(value)
            out.append(fact(name, value, unit, src))
        if k.get("vendor"):
            out.append(fact("supplier", str(k["vendor"]), None, src))
        if k.get("assumed"):
            out.append(
                fact("assumed inputs (documented defaults)", str(k["assumed"]).replace(",", ", "), None, src)
            )
        return out

    def _change_facts(self, sku: str, src: str) -> list[dict[str, Any]]:
        c = self.change(sku)
        if not c:
            return []
        out = [
            fact("previous forecast for the horizon", float(c["total_before"]), "units", src),
            fact("forecast change vs the previous run", float(c["change"]), "units", src),
        ]
        if pd.notna(c.get("change_pct")):
            out.append(fact("forecast change vs the previous run, %", float(c["change_pct"]), "%", src))
        out.append(fact("forecast change driver", str(c["driver"]), None, src))
        out.append(fact("forecast change note", str(c["driver_note"]), None, src))
        return out

    # ---------------------------------------------------------------- across SKUs
    def metrics(self) -> pd.DataFrame:
        """Backtest metrics, one row per model."""
        return self.table("backtest_metrics")

    def orders(self) -> pd.DataFrame:
        """Order advice for SKUs to order now, most urgent first (the full table: `table("order_advice")`)."""
        o = self.table("order_advice")
        if o.empty:
            return o
        o = o[o["status"] == "order now"]
        return o.sort_values(["days_to_order", "stockout_prob"], ascending=[True, False]).reset_index(
            drop=True
        )

    def risks(self, limit: int | None = None) -> pd.DataFrame:
        """SKUs by stockout probability before the next delivery, highest first."""
        k = self.table("inventory_kpis")
        cols = [
            c
            for c in (
                "unique_id",
                "stockout_prob",
                "days_of_cover",
                "inventory_position",
                "reorder_point",
                "status",
                "abc",
            )
            if c in k.columns
        ]
        out = (
            k[cols]
            .sort_values(["stockout_prob", "unique_id"], ascending=[False, True])
            .reset_index(drop=True)
        )
        return out.head(limit) if limit else out

    def forecast_changes(self) -> pd.DataFrame:
        """Per-SKU changes vs the previous run, largest absolute change first (empty on a first run)."""
        return self.table("forecast_changes")

    def weekly_reports(self) -> pd.DataFrame:
        """Rows of the `weekly_reports` table (any run), newest per as-of date; empty when none."""
        if "weekly_reports@all" not in self._tables:
            frame = self.store.load("weekly_reports")
            if frame.empty or "as_of" not in frame.columns:
                frame = pd.DataFrame()
            else:
                frame["as_of"] = pd.to_datetime(frame["as_of"])
                frame = (
                    frame.drop_duplicates("as_of", keep="last").sort_values("as_of").reset_index(drop=True)
                )
            self._tables["weekly_reports@all"] = frame
        return self._tables["weekly_reports@all"]

    # ---------------------------------------------------------------- groups (category, store)
    def _attribute_values(self, attribute: str) -> list[str]:
        d = self.table("sku_attributes")
        if d.empty:
            return []
        return sorted(d.loc[d["attribute"] == attribute, "value"].unique().tolist())

    def categories(self) -> list[str]:
        return self._attribute_values("category")

    def stores(self) -> list[str]:
        return self._attribute_values("store")

    def skus_with(self, attribute: str, value: str) -> list[str]:
        d = self.table("sku_attributes")
        if d.empty:
            return []
        hit = d[(d["attribute"] == attribute) & (d["value"] == str(value))]["unique_id"]
        return sorted(set(hit) & self._sku_set)

    def group_facts(self, attribute: str, value: str) -> list[dict[str, Any]]:
        """Totals over the SKUs of one category or store (source `category:<value>` / `store:<value>`)."""
        skus = self.skus_with(attribute, value)
        if not skus:
            raise InputError(f"no SKUs with {attribute} {value!r} in run {self.run_id}")
        src = self.source(attribute, value)
        word = self.period
        n = RECENT_PERIODS.get(word, 4)
        fc = self.table("forecasts")
        fc = fc[fc["unique_id"].isin(skus)]
        hist = self.table("demand")
        hist = hist[hist["unique_id"].isin(skus)]
        recent_dates = np.sort(hist["ds"].unique())[-n:]
        k = self._kpi_index().reindex(skus).dropna(how="all")
        h = fc.groupby("unique_id").size().max()
        facts = [
            fact("as of", pd.Timestamp(self.as_of), "date", src),
            fact("SKUs", len(skus), None, src),
            fact(
                f"demand last {n} {word}s",
                float(hist.loc[hist["ds"].isin(recent_dates), "y"].sum()),
                "units",
                src,
            ),
            fact(f"forecast next {h} {word}s", float(fc["yhat"].sum()), "units", src),
            fact("SKUs to order now", int((k["status"] == "order now").sum()), None, src),
            fact("order value now", float(k["order_value"].sum()), "currency", src),
            fact("mean stockout probability", float(k["stockout_prob"].mean()), "ratio", src),
        ]
        if len(k):
            top = k["stockout_prob"].astype(float).idxmax()
            facts.append(fact("highest stockout risk SKU", str(top), None, src))
            facts.append(
                fact("highest stockout probability", float(k.loc[top, "stockout_prob"]), "ratio", src)
            )
        classes = self.table("demand_classes")
        counts = classes[classes["unique_id"].isin(skus)]["demand_class"].value_counts()
        for cls, count in counts.items():
            facts.append(fact(f"{cls} demand SKUs", int(count), None, src))
        return facts

    # ---------------------------------------------------------------- suppliers
    def suppliers(self) -> list[str]:
        """Suppliers (vendors) with lead-time statistics in this run, without the pooled ALL row."""
        t = self.table("supplier_lead_times")
        if t.empty:
            return []
        return sorted(str(v) for v in t["vendor"].astype(str).unique() if v != ALL_VENDORS)

    def supplier_facts(self, name: str) -> list[dict[str, Any]]:
        """Lead-time facts of one supplier (ALL = pooled over every PO); InputError for an unknown one."""
        t = self.table("supplier_lead_times")
        rows = t[t["vendor"].astype(str) == str(name)] if len(t) else t
        if rows.empty:
            close = [v for v, _ in self.match_suppliers(str(name))]
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise InputError(f"unknown supplier {name!r} in run {self.run_id}{hint}")
        r = rows.iloc[0]
        src = self.source("supplier", str(name))
        spec = [
            ("purchase orders", "n_pos", None),
            ("mean lead time", "mean_days", "days"),
            ("lead time standard deviation", "std_days", "days"),
            ("median lead time", "p50_days", "days"),
            ("90th percentile lead time", "p90_days", "days"),
            ("lead time trend per 30 days", "trend_days_per_30d", "days"),
            ("promised lead time", "promised_days", "days"),
            ("on-time rate", "on_time_rate", "ratio"),
            ("first purchase order", "first_po", "date"),
            ("last purchase order", "last_po", "date"),
        ]
        out = [fact("supplier", str(name), None, src)]
        for label, col, unit in spec:
            if col in r.index and pd.notna(r[col]):
                value = r[col]
                value = int(value) if col == "n_pos" else (value if unit == "date" else float(value))
                out.append(fact(label, value, unit, src))
        k = self.table("inventory_kpis")
        if "vendor" in k.columns:
            out.append(fact("SKUs supplied", int((k["vendor"].astype(str) == str(name)).sum()), None, src))
        return out

    def match_suppliers(self, text: str, limit: int = 5) -> list[tuple[str, float]]:
        from rapidfuzz import fuzz, process

        names = self.suppliers()
        if str(text) in names:
            return [(str(text), 100.0)]
        hits = process.extract(str(text), names, scorer=fuzz.WRatio, limit=limit, score_cutoff=60)
        return [(name, float(score)) for name, score, _ in hits]

    # ---------------------------------------------------------------- matching
    @cached_property
    def _code_parts(self) -> dict[str, list[str]]:
        """Upper-cased code (whole id or one '/' part) -> SKUs it names."""
        out: dict[str, list[str]] = {}
        for sku in self.skus:
            out.setdefault(sku.upper(), []).append(sku)
            parts = sku.split("/")
            if len(parts) > 1:
                for part in parts:
                    out.setdefault(part.upper(), []).append(sku)
        return out

    def match_skus(self, text: str, limit: int = 5) -> list[tuple[str, float]]:
        """SKUs a text names: exact codes first (score 100; 95 for one part of an item/store id), then
        fuzzy matches over codes and descriptions (rapidfuzz, 0-100)."""
        from rapidfuzz import fuzz, process, utils

        text = str(text).strip()
        if not text:
            return []
        scores: dict[str, float] = {}
        for token in _TOKEN.findall(text):
            key = token.upper()
            for sku in self._code_parts.get(key, []):
                scores[sku] = max(scores.get(sku, 0.0), 100.0 if sku.upper() == key else 95.0)
        if len(scores) < limit:
            codes = process.extract(
                text.upper(),
                self.skus,
                scorer=fuzz.ratio,
                limit=limit,
                processor=utils.default_process,
                score_cutoff=60,
            )
            for sku, score, _ in codes:
                scores.setdefault(sku, min(float(score), 94.0))
            if self._descriptions:
                keys = list(self._descriptions)
                hits = process.extract(
                    text,
                    [self._descriptions[k] for k in keys],
                    scorer=fuzz.WRatio,
                    limit=limit,
                    processor=utils.default_process,
                    score_cutoff=60,
                )
                for _desc, score, i in hits:
                    sku = keys[i]
                    if sku in self._sku_set:
                        scores[sku] = max(scores.get(sku, 0.0), min(float(score), 94.0))
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:limit]

    def unknown_sku_message(self, text: str) -> str:
        """A one-line reply for a SKU this run does not have, with close matches when there are some."""
        close = [(s, sc) for s, sc in self.match_skus(text) if s.upper() != str(text).strip().upper()]
        if not close:
            return (
                f"SKU {text!r} is not in the current results (run {self.run_id}), and no SKU is close to it."
            )
        named = ", ".join(f"{s} ({self.description(s)})" if self.description(s) else s for s, _ in close)
        return f"SKU {text!r} is not in the current results (run {self.run_id}); close matches: {named}."
