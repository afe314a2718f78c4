"""Tools: the facts each intent needs, read from the FactBook (what-ifs recomputed by inventory code).

A tool returns a `ToolResult`: a few facts (few, so the prompt stays short and the small model copies them
faithfully), the `headline` facts an answer must state, the ids of the documents the facts come from, and
an optional note for the plain answer. No number here is produced by a language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from forecasting.errors import InputError
from forecasting.factbook import fact as make_fact
from forecasting.inventory.policy import (
    lead_time_demand,
    reorder_point,
    safety_stock_csl,
    stockout_probability,
)
from llm.entities import Entities, periods_label
from llm.facts import Fact, as_facts

if TYPE_CHECKING:
    from forecasting.factbook import FactBook

ORDER_FACTS = (
    "order status",
    "recommended order quantity",
    "order by",
    "reorder point",
    "inventory position",
    "safety stock",
)
RISK_FACTS = (
    "stockout probability before the next delivery",
    "days of cover",
    "inventory position",
    "reorder point",
)
LEAD_FACTS = ("lead time", "lead time standard deviation", "supplier")
SUPPLIER_FACTS = (
    "supplier",
    "mean lead time",
    "lead time standard deviation",
    "90th percentile lead time",
    "on-time rate",
    "purchase orders",
)
CHANGE_FACTS = (
    "forecast change vs the previous run",
    "forecast change vs the previous run, %",
    "forecast change driver",
    "previous forecast for the horizon",
    "forecast change note",
)
KPI_FACTS = {  # glossary term -> the SKU fact that shows it, when a SKU is named
    "eoq": "EOQ", "safety stock": "safety stock", "reorder point": "reorder point",
    "service level": "service level target", "days of cover": "days of cover",
    "inventory position": "inventory position",
    "stockout probability": "stockout probability before the next delivery",
    "order-up-to": "order-up-to level",
}  # fmt: skip
TOP_N = 3


@dataclass
class ToolResult:
    """Facts for one question, the ones an answer must mention, their documents, and a note."""

    facts: list[Fact] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    note: str | None = None

    def add(self, facts: list[Fact], headline: bool = False) -> None:
        for f in facts:
            if f.value is None or any(f.name == g.name for g in self.facts):
                continue
            self.facts.append(f)
            if headline:
                self.headline.append(f.name)
            doc = doc_id(f)
            if doc and doc not in self.doc_ids:
                self.doc_ids.append(doc)


def doc_id(f: Fact) -> str | None:
    """The document a fact comes from: its source without the "@run ..." suffix."""
    doc = (f.source or "").split("@", 1)[0].strip()
    return doc if ":" in doc and " " not in doc else None


def pick(facts: list[Fact], names: tuple[str, ...] | list[str]) -> list[Fact]:
    """The facts with these names, in the order given."""
    by = {f.name: f for f in facts}
    return [by[n] for n in names if n in by]


def prefixed(facts: list[Fact], prefix: str) -> list[Fact]:
    return [Fact(f"{prefix} {f.name}", f.value, f.unit, f.source) for f in facts]


def sku_facts(book: FactBook, sku: str) -> list[Fact]:
    return as_facts(book.sku_facts(sku))


def forecast_facts(book: FactBook, sku: str, periods: int, label: str) -> list[Fact]:
    """Forecast total over the first `periods` periods with the sum of the 90% bounds (FactBook rounding)."""
    fc = book.forecast(sku).head(periods)
    src = book.source("sku", sku)
    if fc.empty:
        return []
    name = f"forecast {label}"
    rows = [
        make_fact(name, float(fc["yhat"].sum()), "units", src),
        make_fact(f"{name}, 90% interval low", float(fc["yhat_lower"].sum()), "units", src),
        make_fact(f"{name}, 90% interval high", float(fc["yhat_upper"].sum()), "units", src),
    ]
    return as_facts(rows)


def what_if(
    book: FactBook,
    sku: str,
    service_level: float | None = None,
    lead_time_factor: float | None = None,
    lead_time_days: float | None = None,
) -> list[Fact]:
    """Safety stock, reorder point and stockout risk recomputed for a new service level and/or lead time.

    From the SKU's stored inventory facts: demand per day over the lead time d = ltd_mean / L and the daily
    demand deviation implied by ltd_std^2 = L sigma_d^2 + d^2 sigma_L^2; then `lead_time_demand`,
    `safety_stock_csl`, `reorder_point` and `stockout_probability` (forecasting.inventory.policy) at the
    new settings. The lead-time standard deviation is kept. With unchanged settings this reproduces the
    stored cycle-service-level safety stock and reorder point.
    """
    k = book.kpis(sku)
    if not k:
        raise InputError(f"no inventory facts for {sku} in run {book.run_id}")
    src = f"what-if on {book.source('sku', sku)}"
    level_now = float(k["service_level"])
    lt_now, lt_sd = float(k["lead_time_days"]), float(k["lead_time_std_days"])
    level = level_now if service_level is None else float(service_level)
    lt_new = lt_now * (lead_time_factor or 1.0) if lead_time_days is None else float(lead_time_days)
    d = float(k["ltd_mean"]) / lt_now
    sigma_d = math.sqrt(max(float(k["ltd_std"]) ** 2 - d**2 * lt_sd**2, 0.0) / lt_now)
    mean, std = lead_time_demand(d, sigma_d, lt_new, lt_sd)
    ss = float(safety_stock_csl(level, d, sigma_d, lt_new, lt_sd))
    rop = float(reorder_point(mean, ss))
    risk = float(stockout_probability(float(k["inventory_position"]), mean, std))
    current_ss = float(k.get("safety_stock_csl", k["safety_stock"]))
    rows = [
        make_fact("current service level", level_now, "ratio", book.source("sku", sku)),
        make_fact("what-if service level", level, "ratio", src),
        make_fact("current lead time", lt_now, "days", book.source("sku", sku)),
        make_fact("what-if lead time", lt_new, "days", src),
        make_fact("current safety stock", current_ss, "units", book.source("sku", sku)),
        make_fact("what-if safety stock", ss, "units", src),
        make_fact("current reorder point", float(k["reorder_point"]), "units", book.source("sku", sku)),
        make_fact("what-if reorder point", rop, "units", src),
        make_fact("what-if stockout probability", risk, "ratio", src),
    ]
    return as_facts(rows)


def attention_facts(book: FactBook, sku: str, top: int = 2) -> list[Fact]:
    """The past periods the LSTM attended to most for this SKU (table forecast_attention), when stored."""
    table = book.table("forecast_attention")
    if table.empty or "unique_id" not in table.columns:
        return []
    rows = table[table["unique_id"] == sku]
    weight_col = next((c for c in ("weight", "attention") if c in rows.columns), None)
    date_col = next((c for c in ("ds_past", "past_ds", "lag_ds", "ds") if c in rows.columns), None)
    if rows.empty or weight_col is None or date_col is None:
        return []
    agg = rows.groupby(date_col)[weight_col].mean().sort_values(ascending=False).head(top)
    src = book.source("sku", sku)
    out = []
    for i, (when, weight) in enumerate(agg.items(), start=1):
        out.append(make_fact(f"most attended past {book.period} #{i}", np.datetime64(when, "D"), "date", src))
        out.append(make_fact(f"attention weight of that {book.period} #{i}", float(weight), "ratio", src))
    return as_facts(out)


def _group(book: FactBook, ent: Entities) -> list[Fact]:
    out: list[Fact] = []
    for attribute, values in (("store", ent.stores), ("category", ent.categories)):
        for value in values[:1]:
            out += as_facts(book.group_facts(attribute, value))
    return out


def run_tool(intent: str, ent: Entities, book: FactBook, question: str = "") -> ToolResult:
    """The facts for `intent` about the entities (the first SKU for single-SKU intents)."""
    res = ToolResult()
    sku = ent.skus[0] if ent.skus else None
    if sku is not None:
        res.doc_ids.append(f"sku:{sku}")
    if intent == "comparison":
        n, label = periods_label(ent.period, book)
        for s in ent.skus[:TOP_N]:
            facts = sku_facts(book, s)
            res.add(prefixed(forecast_facts(book, s, n, label)[:1], s), headline=True)
            res.add(
                prefixed(pick(facts, ("stockout probability before the next delivery", "reorder point")), s)
            )
            if f"sku:{s}" not in res.doc_ids:
                res.doc_ids.append(f"sku:{s}")
        if len(ent.skus) < 2:
            res.note = "Name two SKUs to compare; here are the figures for the one I found."
        return res
    if intent == "supplier_lead_time" and ent.suppliers:
        res.add(pick(as_facts(book.supplier_facts(ent.suppliers[0])), SUPPLIER_FACTS), headline=True)
        return res
    if sku is None:
        return _no_sku(intent, ent, book, res)
    facts = sku_facts(book, sku)
    res.add(pick(facts, ("description",)))
    if intent == "forecast_lookup":
        n, label = periods_label(ent.period, book)
        res.add(forecast_facts(book, sku, n, label), headline=True)
    elif intent == "order_advice":
        wanted = ORDER_FACTS
        if "safety stock" in question.lower():
            wanted = ("safety stock", "reorder point", "service level target")
        elif "eoq" in question.lower() or "economic order" in question.lower():
            wanted = ("EOQ", "recommended order quantity", "order status")
        res.add(pick(facts, wanted), headline=True)
    elif intent == "stockout_risk":
        res.add(pick(facts, RISK_FACTS[:2]), headline=True)
        res.add(pick(facts, RISK_FACTS[2:]))
    elif intent == "supplier_lead_time":
        res.add(pick(facts, LEAD_FACTS), headline=True)
        assumed = next((f for f in facts if f.name.startswith("assumed inputs")), None)
        if assumed is not None and "lead_time" in str(assumed.value):
            res.note = "The lead time is the planner's documented default (no purchase-order history)."
    elif intent == "forecast_change":
        change = pick(facts, CHANGE_FACTS)
        if change:
            res.add(change[:3], headline=True)
            res.add(change[3:])
        else:
            res.note = (
                "There is no previous run to compare with, so here are the recent trend and the forecast."
            )
            trend = [f for f in facts if f.name.startswith("demand trend")]
            res.add(trend, headline=True)
            n, label = periods_label(ent.period, book)
            res.add(forecast_facts(book, sku, n, label)[:1], headline=True)
        res.add(attention_facts(book, sku))
    elif intent == "what_if":
        s = ent.scenario
        if not s:
            res.note = (
                "Say what changes (for example a 99% service level or a doubled lead time); current values:"
            )
        res.add(what_if(book, sku, s.service_level, s.lead_time_factor, s.lead_time_days), headline=True)
    elif intent == "kpi_definition":
        from llm.templates import term_of

        term = term_of(question)
        if term in KPI_FACTS:
            res.add(pick(facts, (KPI_FACTS[term],)), headline=True)
    return res


def _no_sku(intent: str, ent: Entities, book: FactBook, res: ToolResult) -> ToolResult:
    """Questions without a SKU: store/category totals, the order list, the riskiest SKUs."""
    if ent.stores or ent.categories:
        res.add(_group(book, ent), headline=True)
        for attribute, values in (("store", ent.stores), ("category", ent.categories)):
            res.doc_ids += [f"{attribute}:{v}" for v in values[:1]]
        return res
    if intent == "order_advice":
        orders = book.orders().head(TOP_N)
        src = f"order advice table@run {book.run_id}"
        rows = [make_fact("SKUs to order now", int(len(book.orders())), None, src)]
        for r in orders.itertuples():
            rows.append(
                make_fact(
                    f"order {r.unique_id}", float(r.order_qty), "units", book.source("sku", r.unique_id)
                )
            )
        res.add(as_facts(rows), headline=True)
    elif intent == "stockout_risk":
        risks = book.risks(TOP_N)
        rows = [
            make_fact(
                f"stockout probability of {r.unique_id}",
                float(r.stockout_prob),
                "ratio",
                book.source("sku", r.unique_id),
            )
            for r in risks.itertuples()
        ]
        res.add(as_facts(rows), headline=True)
    elif intent not in ("kpi_definition", "out_of_scope"):
        res.note = "Which SKU do you mean? Give its code or product name."
    return res


def fact_dicts(facts: list[Fact]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in facts]
