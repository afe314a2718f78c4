"""Build the LoRA instruction set from real pipeline facts: demo data (UCI Online Retail) and the M5 subset.

    .venv/bin/python -m training_data.build_instructions   # writes training_data/instructions_*.jsonl

Steps: two pipeline runs per dataset (an earlier as-of date, then the latest one, so forecast changes exist)
in a private results store (`--home` keeps it for a rebuild); the bibitor purchase orders give supplier
lead times. Each question (several phrasings per intent) goes through `llm.assistant.Assistant.prepare`,
so `instruction` (system turn) and `input` (facts JSON + documents + question) are exactly the model input
the assistant builds at run time; only questions it routes to the intended intent, with facts, are kept.
The weekly summary uses the weekly report's prompt (`api.report_weekly.SUMMARY_QUESTION`, its fact names).
The reference `output` is written from the prompt's facts by several phrasings per intent (1-3 sentences);
every number in it is a fact's value as the facts JSON shows it (ratios as percentages), and every reference
passes the number guard (checked here; one that does not is reported and left out).

Splits are by SKU (a stable hash of the unique id, 80/10/10): no SKU is in two splits. Comparisons and
weekly summaries use SKUs of one split only; supplier examples split by supplier the same way. The build is
deterministic: fixed as-of dates and models, stable hashes for every choice. Each dataset's knowledge index
is built from its latest run (`rag.knowledge.update_index`, as `stockpilot index` does) and the assistant
retrieves from it, so inputs carry the same `<documents>` block as at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.factbook import fact
from forecasting.io import atomic_write_text
from llm.facts import Fact, as_facts
from llm.guard import check_numbers
from llm.intents import INTENTS as ASSISTANT_INTENTS
from llm.prompts import build_messages
from llm.train import read_jsonl

HERE = Path(__file__).resolve().parent
SPLITS = ("train", "validation", "test")
INTENTS = (*ASSISTANT_INTENTS, "weekly_summary")
WEEKLY_SUMMARY_QUESTION = (
    "Write the weekly procurement summary: the most urgent orders and the biggest risks."
)


def split_of(key: str) -> str:
    """train / validation / test from a stable hash of the SKU (or supplier) id: 80 / 10 / 10."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def rng_for(*parts: str) -> random.Random:
    """A random generator seeded from text (the same SKU and intent always pick the same phrasing)."""
    return random.Random(int(hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16], 16))


# ------------------------------------------------------------------------------------------- pipeline runs


def _m5_long(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The M5 subset as `stockpilot pipeline ... --freq W --price-col sell_price` reads it (weekly)."""
    from forecasting.data import to_long
    from forecasting.io import read_table

    raw = read_table(str(data_dir / "m5" / "m5_sales_long.csv.gz"))
    long, _, freq = to_long(raw, ["item_id", "store_id"], "date", "value", ["sell_price"], "W")
    return long, raw, freq


def _m5_prices(long: pd.DataFrame) -> pd.Series:
    """Last known selling price per series (the price column is empty while an item is off sale)."""
    priced = long.dropna(subset=["sell_price"]).sort_values("ds")
    return priced.groupby("unique_id")["sell_price"].last()


def _bibitor_lead_times(data_dir: Path) -> pd.DataFrame:
    from forecasting.inventory.leadtime import po_lead_times

    po = pd.read_csv(data_dir / "bibitor" / "InvoicePurchases12312016.csv")
    return po_lead_times(po, "VendorNumber", "PODate", ["InvoiceDate"])


def run_pipelines(data_dir: Path, home: Path, datasets: Sequence[str] = ("demo", "m5")) -> dict[str, Any]:
    """Two pipeline runs per dataset in a private store; returns {dataset: FactBook of the latest run}."""
    import os

    os.environ["STOCKPILOT_HOME"] = str(home)
    from forecasting.data import require_length
    from forecasting.demo import demo_transactions
    from forecasting.factbook import FactBook
    from forecasting.pipeline import run_pipeline
    from forecasting.settings import get_settings
    from forecasting.store import ResultsStore
    from forecasting.transactions import sku_descriptions, transactions_to_demand

    get_settings.cache_clear()
    store = ResultsStore()
    runs = store.runs("pipeline").sort_values("created_at")
    latest = {
        json.loads(p or "{}").get("dataset"): r for r, p in zip(runs["run_id"], runs["params"], strict=True)
    }
    if "demo" in datasets and "demo" not in latest:  # a kept home (`--home`) may hold these runs already
        raw = demo_transactions()
        demand, _, freq = transactions_to_demand(raw, "W")
        last = demand["ds"].max()
        # SKUs with enough history for the earlier run too (as `stockpilot demo` requires 2 x horizon + 1).
        early = require_length(demand[demand["ds"] <= last - pd.Timedelta(weeks=4)], 2 * 8 + 1)
        demand = demand[demand["unique_id"].isin(set(early["unique_id"]))].reset_index(drop=True)
        desc = sku_descriptions(raw)
        for as_of in (last - pd.Timedelta(weeks=4), last):
            result = run_pipeline(
                demand, freq, 8, descriptions=desc, dataset="demo", as_of=as_of, model="ets", baselines=(),
                store=store,
            )  # fmt: skip
        latest["demo"] = result.run_id
    if "m5" in datasets and "m5" not in latest:
        latest["m5"] = _run_m5(data_dir, store)
    get_settings.cache_clear()
    return {name: FactBook.from_store(store, latest[name]) for name in datasets}


def _run_m5(data_dir: Path, store: Any) -> str:
    from forecasting.pipeline import attributes_from, run_pipeline

    long, raw_m5, m5_freq = _m5_long(data_dir)
    last = long["ds"].max()
    lead_times = _bibitor_lead_times(data_dir)
    for as_of in (last - pd.Timedelta(weeks=4), last):
        result = run_pipeline(
            long[["unique_id", "ds", "y"]], m5_freq, 8, dataset="m5", as_of=as_of, model="ets", baselines=(),
            store=store, attributes=attributes_from(raw_m5, ["item_id", "store_id"]), prices=_m5_prices(long),
            lead_times=lead_times,
        )  # fmt: skip
    return result.run_id


# ------------------------------------------------------------------------------------------- formatting


def show(fact: Fact, style: str = "plain") -> str:
    """A fact's value written as an answer states it: the JSON value, ratios as percentages, dates ISO or
    as "5 December 2011" (`style="long"`)."""
    date = fact.date
    if date is not None:
        return f"{date.day} {date:%B %Y}" if style == "long" else date.isoformat()
    number = fact.number
    if number is None:
        return str(fact.value)
    if fact.unit_kind == "ratio":
        return f"{_plain(round(number * 100, 2))}%"
    if fact.unit_kind == "percent":
        return f"{_plain(fact.display_value())}%"
    return _plain(fact.display_value())


def _plain(value: Any) -> str:
    """A number as the facts JSON writes it, never in exponent notation (141065000, not 1.41065e+08)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


class FactView:
    """Facts of one prompt by name, with the answer-side formatting (`v`) and selection (`pick`)."""

    def __init__(self, facts: Sequence[dict[str, Any]]):
        self.all = as_facts(facts)
        self.by_name = {f.name: f for f in self.all}

    def has(self, *names: str) -> bool:
        return all(n in self.by_name and self.by_name[n].value is not None for n in names)

    def v(self, name: str, style: str = "plain") -> str:
        return show(self.by_name[name], style)

    def num(self, name: str) -> float | None:
        return self.by_name[name].number if name in self.by_name else None

    def pick(self, names: Sequence[str]) -> list[Fact]:
        return [self.by_name[n] for n in names if n in self.by_name and self.by_name[n].value is not None]


@dataclass
class Draft:
    """One example before rendering: intent, the chat messages the assistant builds, facts, reference."""

    intent: str
    question: str
    messages: list[dict[str, str]]
    facts: list[Fact]
    output: str
    sku: str
    dataset: str
    variant: str = "answer"
    snippets: list[Any] = field(default_factory=list)


def sku_label(book: Any, sku: str) -> str:
    desc = book.description(sku)
    return f"{sku} ({desc.strip().lower()})" if desc else sku


def ask(assistant: Any, question: str, intent: str) -> Any:
    """`Assistant.prepare(question)` when it routes to `intent` with facts and messages for the model."""
    prepared = assistant.prepare(question)
    if prepared.intent != intent or not prepared.messages or not prepared.facts:
        return None
    return prepared


def draft(intent: str, prepared: Any, output: str, sku: str, book: Any, variant: str = "answer") -> Draft:
    return Draft(
        intent, prepared.question, prepared.messages, list(prepared.facts), output, sku, book.dataset,
        variant, list(prepared.snippets),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- intents


def order_advice(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    label = sku_label(book, sku)
    q = rng.choice(
        [
            f"Should I order {sku}?",
            f"Do we need to reorder {sku}?",
            f"How much of {sku} should I buy, and by when?",
            f"What is the order advice for {sku}?",
            f"Is it time to place a purchase order for {sku}?",
            f"Give me the replenishment recommendation for SKU {sku}.",
        ]
    )
    p = ask(assistant, q, "order_advice")
    if p is None:
        return None
    view = FactView(p.facts)
    if not view.has("order status", "reorder point", "inventory position", "recommended order quantity"):
        return None
    status = str(view.by_name["order status"].value)
    qty, ip, rop = view.v("recommended order quantity"), view.v("inventory position"), view.v("reorder point")
    by = view.v("order by") if view.has("order by") else None
    ss = view.v("safety stock") if view.has("safety stock") else None
    if status == "order now" and (view.num("recommended order quantity") or 0) > 0:
        options = [
            f"Yes, order {qty} units of {sku} now. The inventory position of {ip} units is below the reorder "
            f"point of {rop} units.",
            f"Order now: the recommended quantity for {sku} is {qty} units"
            + (f", to be placed by {by}" if by else "")
            + f". Its inventory position ({ip} units) has fallen below the reorder point ({rop} units).",
            f"{sku} needs an order of {qty} units now, because its inventory position of {ip} units is under "
            f"the reorder point of {rop} units" + (f" (safety stock {ss} units)." if ss else "."),
            f"Place an order for {qty} units of {label}"
            + (f" by {view.v('order by', 'long')}" if by else "")
            + f". Stock on hand and on order is {ip} units against a reorder point of {rop} units.",
        ]
    else:
        options = [
            f"No order is needed for {sku} now: its status is {status}, with an inventory position of {ip} "
            f"units against a reorder point of {rop} units.",
            f"Not yet. {sku} is {status}: the inventory position is {ip} units and the reorder point is "
            f"{rop} units" + (f", so the latest order date is {by}." if by else "."),
            f"There is no need to reorder {label} today (status: {status}). It has {ip} units in position "
            f"versus a reorder point of {rop} units" + (f" and a safety stock of {ss} units." if ss else "."),
        ]
    return draft("order_advice", p, rng.choice(options), sku, book)


def forecast_lookup(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    word = book.period
    label = sku_label(book, sku)
    q = rng.choice(
        [
            f"What is the demand forecast for {sku}?",
            f"How many units of {sku} will we sell in the next {book.horizon} {word}s?",
            f"Forecast for {sku} next {word}?",
            f"What do we expect to sell of {sku}?",
            f"Show me the expected demand for {sku} over the next 4 {word}s.",
            f"How much demand is forecast for SKU {sku}?",
        ]
    )
    p = ask(assistant, q, "forecast_lookup")
    if p is None:
        return None
    view = FactView(p.facts)
    total = next(
        (f.name for f in view.all if f.name.startswith("forecast ") and "interval" not in f.name), None
    )
    if total is None or not view.has(f"{total}, 90% interval low", f"{total}, 90% interval high"):
        return None
    when = total.removeprefix("forecast ")
    value, lo, hi = view.v(total), view.v(f"{total}, 90% interval low"), view.v(f"{total}, 90% interval high")
    options = [
        f"{sku} is forecast to sell {value} units over the {when}, with a 90% interval of {lo} to {hi} "
        "units.",
        f"The forecast for {label} is {value} units for the {when} (90% interval {lo} to {hi}).",
        f"Expected demand for {sku}: {value} units in the {when}. The 90% interval runs from {lo} to {hi} "
        "units.",
        f"Over the {when}, {sku} should sell about {value} units (90% interval: {lo}-{hi}).",
    ]
    return draft("forecast_lookup", p, rng.choice(options), sku, book)


def forecast_change(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    q = rng.choice(
        [
            f"Why did the forecast for {sku} change?",
            f"What moved the demand forecast of {sku}?",
            f"Why is the forecast for {sku} different from last time?",
            f"Explain the change in the {sku} forecast since the previous run.",
            f"What drove the new forecast for {sku}?",
        ]
    )
    p = ask(assistant, q, "forecast_change")
    if p is None:
        return None
    view = FactView(p.facts)
    names = (
        "previous forecast for the horizon",
        "forecast change vs the previous run",
        "forecast change driver",
    )
    if not view.has(*names):
        return None
    before = view.v("previous forecast for the horizon")
    change = view.num("forecast change vs the previous run") or 0.0
    driver = str(view.by_name["forecast change driver"].value)
    pct_name = "forecast change vs the previous run, %"
    pct = view.v(pct_name) if view.has(pct_name) else None
    amount = view.v("forecast change vs the previous run").lstrip("-")
    reason = f" The likely driver is {driver}."
    if change == 0:
        options = [
            f"The forecast for {sku} did not change against the previous run ({before} units).{reason}"
        ]
    else:
        direction = "up" if change > 0 else "down"
        options = [
            f"The forecast for {sku} went {direction} by {amount} units" + (f" ({pct})" if pct else "")
            + f" against the previous run, which forecast {before} units." + reason,
            f"Compared with the previous run ({before} units), the {sku} forecast moved {direction} by "
            f"{amount} units" + (f", or {pct}." if pct else ".") + reason,
            f"{sku}: forecast {direction} {amount} units" + (f" ({pct})" if pct else "")
            + f" from {before} units." + reason,
        ]  # fmt: skip
    return draft("forecast_change", p, rng.choice(options), sku, book)


def stockout_risk(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    q = rng.choice(
        [
            f"Will we run out of {sku}?",
            f"What is the stockout risk for {sku}?",
            f"How many days of cover do we have for {sku}?",
            f"Is {sku} at risk of a shortage?",
            f"What are the chances {sku} goes out of stock before the next delivery?",
        ]
    )
    p = ask(assistant, q, "stockout_risk")
    if p is None:
        return None
    view = FactView(p.facts)
    prob = "stockout probability before the next delivery"
    if not view.has(prob, "days of cover"):
        return None
    pr, cover = view.v(prob), view.v("days of cover")
    ip = view.v("inventory position") if view.has("inventory position") else None
    rop = view.v("reorder point") if view.has("reorder point") else None
    options = [
        f"The probability that {sku} runs out before the next delivery is {pr}. Current stock covers {cover} "
        "days of demand.",
        f"{sku} has {cover} days of cover"
        + (f" and an inventory position of {ip} units" if ip else "")
        + f"; the stockout probability before the next delivery is {pr}.",
        f"Stockout risk for {sku}: {pr} before the next delivery, with {cover} days of cover"
        + (f" and a reorder point of {rop} units." if rop else "."),
        f"{sku} covers {cover} days, so the chance of a stockout before the next delivery is {pr}.",
    ]
    return draft("stockout_risk", p, rng.choice(options), sku, book)


KPI_QUESTIONS = (
    ("safety stock", "safety stock", "What does safety stock mean for {sku}?"),
    ("safety stock", "safety stock", "Explain the safety stock of {sku}."),
    ("reorder point", "reorder point", "What is a reorder point, and what is it for {sku}?"),
    ("reorder point", "reorder point", "How should I read the reorder point of {sku}?"),
    ("EOQ", "EOQ", "What is the EOQ of {sku} and what does it mean?"),
    ("service level", "service level target", "What does the service level target of {sku} mean?"),
)


def kpi_definition(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    from llm import templates

    term, fact_name, pattern = rng.choice(KPI_QUESTIONS)
    p = ask(assistant, pattern.format(sku=sku), "kpi_definition")
    if p is None:
        return None
    view = FactView(p.facts)
    if not view.has(fact_name):
        return None
    meaning = templates.definition(p.question).rstrip(".")
    if check_numbers(meaning, []).numbers_checked:
        return None  # a definition with its own numbers would not pass the guard
    kind = view.by_name[fact_name].unit_kind
    value = view.v(fact_name) + ("" if kind in ("ratio", "percent") else " units")
    options = [
        f"{meaning}. For {sku} it is {value}.",
        f"For {sku} the {term} is {value}. {meaning}.",
        f"{sku} has a {term} of {value}. {meaning}.",
    ]
    return draft("kpi_definition", p, rng.choice(options), sku, book)


WHAT_IF_QUESTIONS = (  # phrasings the assistant's scenario parser understands (others change nothing)
    "What if the lead time for {sku} doubles?",
    "What happens to {sku} if lead time doubles?",
    "What would {sku} need at a 99% service level?",
    "What if {sku} had a 95% service level?",
    "What if {sku} had a 99% service level?",
    "What would {sku} need at a 97.5% service level?",
)


def what_if(book: Any, assistant: Any, sku: str, rng: random.Random) -> Draft | None:
    p = ask(assistant, rng.choice(WHAT_IF_QUESTIONS).format(sku=sku), "what_if")
    if p is None:
        return None
    view = FactView(p.facts)
    need = ("current safety stock", "what-if safety stock", "current reorder point", "what-if reorder point")
    if not view.has(*need):
        return None
    ss, ss2 = view.v("current safety stock"), view.v("what-if safety stock")
    if ss == ss2:
        return None  # the scenario was not understood (nothing changed): no example
    rop, rop2 = view.v("current reorder point"), view.v("what-if reorder point")
    if view.has("what-if lead time", "current lead time") and view.v("what-if lead time") != view.v(
        "current lead time"
    ):
        setting = f"a lead time of {view.v('what-if lead time')} days"
    else:
        setting = f"a service level of {view.v('what-if service level')}"
    risk = view.v("what-if stockout probability") if view.has("what-if stockout probability") else None
    options = [
        f"With {setting}, the safety stock of {sku} would be {ss2} units instead of {ss}, and the reorder "
        f"point {rop2} units instead of {rop}.",
        f"At {setting}, {sku} would need a reorder point of {rop2} units (now {rop}) and a safety stock of "
        f"{ss2} units (now {ss})." + (f" The stockout probability would be {risk}." if risk else ""),
        f"If {sku} had {setting}, its reorder point would move from {rop} to {rop2} units and its safety "
        f"stock from {ss} to {ss2} units.",
    ]
    return draft("what_if", p, rng.choice(options), sku, book)


def comparison(book: Any, assistant: Any, a: str, b: str, rng: random.Random) -> Draft | None:
    q = rng.choice(
        [
            f"Compare {a} and {b}.",
            f"How do {a} and {b} compare?",
            f"Which needs more attention, {a} or {b}?",
            f"{a} vs {b}: forecast and stockout risk?",
        ]
    )
    p = ask(assistant, q, "comparison")
    if p is None:
        return None
    view = FactView(p.facts)
    prob = "stockout probability before the next delivery"
    totals = {
        s: next((f.name for f in view.all if f.name.startswith(f"{s} forecast ")), None) for s in (a, b)
    }
    if not all(totals.values()) or not view.has(f"{a} {prob}", f"{b} {prob}"):
        return None
    when = totals[a].removeprefix(f"{a} forecast ")
    ta, tb = view.v(totals[a]), view.v(totals[b])
    pa, pb = view.v(f"{a} {prob}"), view.v(f"{b} {prob}")
    riskier = a if (view.num(f"{a} {prob}") or 0) >= (view.num(f"{b} {prob}") or 0) else b
    options = [
        f"{a} is forecast at {ta} units over the {when} and {b} at {tb} units. The stockout probability is "
        f"{pa} for {a} and {pb} for {b}, so {riskier} is the riskier one.",
        f"Over the {when}, {a} should sell {ta} units and {b} {tb} units. {riskier} has the higher stockout "
        f"risk ({pa} for {a}, {pb} for {b}).",
        f"{riskier} needs more attention: the stockout probabilities are {pa} for {a} and {pb} for {b}. "
        f"Forecasts: {ta} units for {a}, {tb} units for {b}.",
    ]
    return draft("comparison", p, rng.choice(options), f"{a}+{b}", book)


def supplier_lead_time(book: Any, assistant: Any, vendor: str, rng: random.Random) -> Draft | None:
    q = rng.choice(
        [
            f"How long does supplier {vendor} take to deliver?",
            f"What is the lead time of vendor {vendor}?",
            f"Is supplier {vendor} reliable?",
            f"How late is vendor {vendor} usually?",
        ]
    )
    p = ask(assistant, q, "supplier_lead_time")
    if p is None:
        return None
    view = FactView(p.facts)
    if not view.has("mean lead time", "90th percentile lead time"):
        return None
    mean, p90 = view.v("mean lead time"), view.v("90th percentile lead time")
    n = view.v("purchase orders") if view.has("purchase orders") else None
    std = view.v("lead time standard deviation") if view.has("lead time standard deviation") else None
    on_time = view.v("on-time rate") if view.has("on-time rate") else None
    options = [
        f"Supplier {vendor} takes {mean} days on average"
        + (f" over {n} purchase orders" if n else "")
        + f"; the 90th percentile lead time is {p90} days.",
        f"Vendor {vendor} has a mean lead time of {mean} days"
        + (f" (standard deviation {std} days)" if std else "")
        + (f" and an on-time rate of {on_time}." if on_time else "."),
        f"{vendor} delivers in {mean} days on average"
        + (f", on time {on_time} of the time" if on_time else "")
        + f"; the 90th percentile is {p90} days.",
    ]
    return draft("supplier_lead_time", p, rng.choice(options), f"supplier:{vendor}", book)


OUT_OF_SCOPE = (
    "What is the capital of France?",
    "Tell me a joke about accountants.",
    "Write a poem about the sea.",
    "Who will win the football match on Saturday?",
    "Can you recommend a good pizza place?",
    "What is the weather tomorrow?",
    "Translate 'good morning' into German.",
    "How do I fix my laptop's Wi-Fi?",
    "What is your favourite film?",
    "Summarise the plot of Hamlet.",
)


def out_of_scope(key: str, book: Any, rng: random.Random) -> Draft:
    """Off-topic questions: no facts, the assistant's refusal (so the model also refuses when asked)."""
    from llm import templates

    q = rng.choice(OUT_OF_SCOPE)
    messages = build_messages(q, [])
    return Draft("out_of_scope", q, messages, [], templates.REFUSAL, key, book.dataset)


def weekly_summary(book: Any, skus: Sequence[str], key: str, rng: random.Random) -> Draft | None:
    """The weekly report's summary prompt (`api.report_weekly`: SUMMARY_QUESTION and its fact names) over
    the orders, risks and forecast changes of `skus`."""
    from api.report_weekly import SUMMARY_QUESTION

    orders = book.orders()
    orders = orders[orders["unique_id"].isin(skus)]
    risks = book.risks()
    risks = risks[risks["unique_id"].isin(skus)]
    if orders.empty or risks.empty:
        return None
    src = f"report:weekly:{book.as_of}@run {book.run_id}"
    first, risk = orders.iloc[0], risks.iloc[0]
    rows = [
        fact("report week start", pd.Timestamp(book.as_of), "date", src),
        fact("SKUs to order now", len(orders), None, src),
        fact("most urgent order SKU", str(first["unique_id"]), None, src),
        fact("most urgent order quantity", float(first["order_qty"]), "units", src),
        fact("most urgent order, order by", pd.Timestamp(first["latest_order_date"]), "date", src),
        fact("highest stockout risk SKU", str(risk["unique_id"]), None, src),
        fact(
            "highest stockout probability before the next delivery",
            float(risk["stockout_prob"]),
            "ratio",
            src,
        ),
    ]
    changes = book.forecast_changes()
    changes = changes[changes["unique_id"].isin(skus)] if len(changes) else changes
    if len(changes):
        c = changes.reindex(changes["change"].abs().sort_values(ascending=False).index).iloc[0]
        rows.append(fact("largest forecast change SKU", str(c["unique_id"]), None, src))
        if pd.notna(c["change_pct"]):
            rows.append(fact("largest forecast change vs last week", float(c["change_pct"]), "%", src))
        rows.append(fact("largest forecast change driver", str(c["driver"]), None, src))
    facts = as_facts(rows)
    view = FactView(facts)
    n, top, qty = (
        view.v("SKUs to order now"),
        view.v("most urgent order SKU"),
        view.v("most urgent order quantity"),
    )
    by, who = view.v("most urgent order, order by"), view.v("highest stockout risk SKU")
    pr = view.v("highest stockout probability before the next delivery")
    change = ""
    if view.has("largest forecast change SKU", "largest forecast change vs last week"):
        change = (
            f" The largest forecast change is {view.v('largest forecast change SKU')} at "
            f"{view.v('largest forecast change vs last week')} ({view.v('largest forecast change driver')})."
        )
    options = [
        f"{n} SKUs need an order now; the most urgent is {top}, {qty} units by {by}. The highest stockout "
        f"risk is {who} at {pr}.{change}",
        f"This week, order {qty} units of {top} first (by {by}); {n} SKUs are due in total. {who} has the "
        f"highest stockout probability, {pr}.",
        f"Order now: {n} SKUs, led by {top} ({qty} units, order by "
        f"{view.v('most urgent order, order by', 'long')}). Biggest stockout risk: {who} ({pr}).{change}",
    ]
    messages = build_messages(SUMMARY_QUESTION, facts)
    return Draft("weekly_summary", SUMMARY_QUESTION, messages, facts, rng.choice(options), key, book.dataset)


# ------------------------------------------------------------------------------------------- assembling


def render(draft: Draft, split: str) -> dict[str, Any]:
    """The JSONL record: instruction (system turn), input (user turn) exactly as built at run time, output."""
    system, user = draft.messages[0], draft.messages[-1]
    return {
        "instruction": system["content"],
        "input": user["content"],
        "output": draft.output,
        "intent": draft.intent,
        "variant": draft.variant,
        "sku": draft.sku,
        "dataset": draft.dataset,
        "split": split,
        "question": draft.question,
        "facts": [f.to_dict() for f in draft.facts],
        "documents": [{"text": d.text, "source": d.source} for d in draft.snippets],
    }


def _check(draft: Draft) -> str | None:
    """Why a reference fails the number guard, or None when every number in it is a fact."""
    result = check_numbers(draft.output, draft.facts, question=draft.question)
    return None if result.ok else f"{result.numbers_rejected} in {draft.output!r}"


def select_skus(book: Any, limit: int) -> list[str]:
    """SKUs with demand and a plan, most demanded first (ties by id), at most `limit`."""
    k = book.table("inventory_kpis")
    k = k[(k["annual_demand"] > 0) & k["reorder_point"].notna()]
    k = k.sort_values(["annual_demand", "unique_id"], ascending=[False, True])
    return k["unique_id"].astype(str).head(limit).tolist()


def book_retriever(book: Any, folder: Path) -> Any:
    """A retriever over the knowledge index of the book's run, built (or brought up to date) in `folder`."""
    from llm.assistant import CONTEXT_K
    from rag.knowledge import get_retriever, update_index

    update_index(book.store, folder=folder, run_id=book.run_id)
    return get_retriever(k=CONTEXT_K, folder=folder)


def drafts_for_book(
    book: Any, skus: Sequence[str], say: Callable[[str], None], retriever: Any = None
) -> list[Draft]:
    from llm.assistant import Assistant

    assistant = Assistant(factbook=book, retriever=retriever, use_model=False)
    drafts: list[Draft | None] = []
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, sku in enumerate(skus):
        by_split[split_of(sku)].append(sku)
        rng = rng_for(book.dataset, sku)
        for make in (order_advice, forecast_lookup, forecast_change, stockout_risk, what_if):
            drafts.append(make(book, assistant, sku, rng))
        if i % 2 == 0:
            drafts.append(kpi_definition(book, assistant, sku, rng))
        if i % 5 == 1:
            drafts.append(out_of_scope(sku, book, rng))
        if i and i % 100 == 0:
            say(f"{book.dataset}: {i} SKUs")
    for split, members in by_split.items():
        rng = rng_for(book.dataset, split, "groups")
        for j in range(0, len(members) - 1, 2):
            drafts.append(comparison(book, assistant, members[j], members[j + 1], rng))
        shuffled = list(members)
        for j in range(max(len(members) // 6, 2)):
            rng.shuffle(shuffled)
            drafts.append(
                weekly_summary(book, shuffled[: min(40, len(shuffled))], f"weekly:{split}:{j}", rng)
            )
    for vendor in book.suppliers():
        rng = rng_for(book.dataset, "supplier", vendor)
        for _ in range(3):
            drafts.append(supplier_lead_time(book, assistant, vendor, rng))
    return [d for d in drafts if d is not None]


def example_split(draft: Draft) -> str:
    if draft.sku.startswith("weekly:"):
        return draft.sku.split(":")[1]
    return split_of(draft.sku.split("+")[0])


def dataset_records(
    data_dir: Path, dataset: str, limit: int, home: Path, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Checked, rendered examples of one dataset (its pipeline runs made in `home` when missing)."""
    say(f"pipeline runs of {dataset}")
    book = run_pipelines(data_dir, home, (dataset,))[dataset]
    say(f"knowledge index of {dataset}")
    retriever = book_retriever(book, home / f"index-{dataset}")
    out = []
    for item in drafts_for_book(book, select_skus(book, limit), say, retriever):
        problem = _check(item)
        if problem:  # never expected: reported, and the example is left out
            say(f"left out: {problem}")
            continue
        out.append(render(item, example_split(item)))
    return out


def assemble(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by split, duplicates (same input and output) dropped, each split in a seeded order."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    seen = set()
    for record in records:
        key = (record["input"], record["output"])
        if key not in seen:
            seen.add(key)
            out[record["split"]].append(record)
    for split, items in out.items():
        rng_for("shuffle", split).shuffle(items)
    return out


def build(
    data_dir: Path,
    demo_skus: int = 220,
    m5_skus: int = 280,
    say: Callable[[str], None] = print,
    home: Path | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """All examples by split (deterministic). `home` keeps the pipeline runs for a later build."""
    with tempfile.TemporaryDirectory(prefix="stockpilot-instructions-") as tmp:
        records = []
        for name, limit in (("demo", demo_skus), ("m5", m5_skus)):
            records += dataset_records(data_dir, name, limit, Path(home or tmp), say)
    return assemble(records)


# ------------------------------------------------------------------------------------------- files


def to_jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def data_card(splits: dict[str, list[dict[str, Any]]], texts: dict[str, str]) -> str:
    """Markdown: counts per intent and split, length statistics, SKU overlap check, data hash."""
    digest = hashlib.sha256("".join(texts[s] for s in SPLITS).encode("utf-8")).hexdigest()
    lines = [
        "# Instruction data card",
        "",
        "Built by `python -m training_data.build_instructions` from real pipeline facts (demo data = UCI",
        "Online Retail weekly, M5 subset weekly; supplier lead times from the bibitor purchase orders). Each",
        "record: `instruction` (system prompt), `input` (facts JSON + documents + question, exactly as the",
        "assistant builds the user turn), `output` (reference answer; every number is a fact's value and",
        "passes the number guard), plus `intent`, `variant`, `sku`, `dataset`, `split`, `question`, `facts`,",
        "`documents` (the retrieved passages in the input).",
        "Inputs come from `Assistant.prepare` (the run-time model input) with a retriever over the run's",
        "knowledge index, so they carry the documents block the assistant sends.",
        "Splits are by SKU (stable hash, 80/10/10); no SKU or supplier appears in two splits.",
        "",
        f"Data hash (sha256 of train + validation + test JSONL): `{digest}`",
        "",
        "## Examples per intent and split",
        "",
        "| intent | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    counts = {s: Counter(r["intent"] for r in splits[s]) for s in SPLITS}
    for intent in INTENTS:
        row = [counts[s][intent] for s in SPLITS]
        lines.append(f"| {intent} | " + " | ".join(str(c) for c in row) + f" | {sum(row)} |")
    totals = [len(splits[s]) for s in SPLITS]
    lines.append("| **all** | " + " | ".join(str(c) for c in totals) + f" | {sum(totals)} |")
    lines += [
        "",
        "## Lengths (characters)",
        "",
        "| field | min | median | mean | max |",
        "|---|---:|---:|---:|---:|",
    ]
    records = [r for s in SPLITS for r in splits[s]]
    for name in ("input", "output"):
        n = np.array([len(r[name]) for r in records])
        lines.append(f"| {name} | {n.min()} | {int(np.median(n))} | {n.mean():.0f} | {n.max()} |")
    out_words = np.array([len(r["output"].split()) for r in records])
    lines.append(
        f"| output (words) | {out_words.min()} | {int(np.median(out_words))} | {out_words.mean():.1f} | "
        f"{out_words.max()} |"
    )
    keys = {s: {r["sku"] for r in splits[s]} for s in SPLITS}
    shared = (
        (keys["train"] & keys["validation"])
        | (keys["train"] & keys["test"])
        | (keys["validation"] & keys["test"])
    )
    variants = Counter(r["variant"] for r in records)
    datasets = Counter(r["dataset"] for r in records)
    lines += [
        "",
        f"SKU keys shared between splits: {len(shared)}. Variants: "
        + ", ".join(f"{k} {v}" for k, v in sorted(variants.items()))
        + ". Datasets: "
        + ", ".join(f"{k} {v}" for k, v in sorted(datasets.items()))
        + ".",
        "",
    ]
    return "\n".join(lines)


def write(splits: dict[str, list[dict[str, Any]]], folder: Path = HERE) -> dict[str, str]:
    texts = {s: to_jsonl(splits[s]) for s in SPLITS}
    for split, text in texts.items():
        atomic_write_text(folder / f"instructions_{split}.jsonl", text)
    atomic_write_text(folder / "DATA_CARD.md", data_card(splits, texts))
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--demo-skus", type=int, default=220)
    parser.add_argument("--m5-skus", type=int, default=280)
    parser.add_argument("--home", type=Path, help="Keep (or reuse) the pipeline runs in this folder.")
    parser.add_argument("--part", choices=("demo", "m5"), help="Build one dataset's examples into --home.")
    parser.add_argument("--merge", type=Path, help="Merge the parts built in this folder into the files.")
    args = parser.parse_args(argv)
    if not (args.data_dir / "m5").is_dir():
        raise InputError(f"{args.data_dir}: no m5/ folder (give --data-dir, the shared data folder)")
    limits = {"demo": args.demo_skus, "m5": args.m5_skus}
    if args.part:  # one dataset only (two parts can be built in parallel, then --merge)
        if not args.home:
            raise InputError("--part needs --home (the pipeline runs are shared between the parts)")
        records = dataset_records(args.data_dir, args.part, limits[args.part], args.home)
        atomic_write_text(args.home / f"part-{args.part}.jsonl", to_jsonl(records))
        return 0
    if args.merge:
        parts = [read_jsonl(args.merge / f"part-{name}.jsonl") for name in ("demo", "m5")]
        splits = assemble(parts[0] + parts[1])
    else:
        splits = build(args.data_dir, args.demo_skus, args.m5_skus, home=args.home)
    write(splits, args.out)
    print(json.dumps({s: len(r) for s, r in splits.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
