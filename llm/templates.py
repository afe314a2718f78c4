"""Plain answers built from facts alone: the guard's fallback, refusals, unknown-entity replies, definitions.

Every number in these sentences is a fact's value written by `llm.facts.format_fact`, so the number guard
accepts them by construction. Facts are looked up by the names the tools give them (`llm.tools`).
"""

from __future__ import annotations

from collections.abc import Sequence

from llm.facts import Fact, format_fact

REFUSAL = (
    "I can only help with procurement questions about this run's SKUs: forecasts, order advice, stockout "
    "risk, supplier lead times, what-if recalculations and the procurement policy."
)
NO_RUN = "There are no pipeline results yet: run `stockpilot demo` or `stockpilot pipeline` first."

# Definitions without digits (so they need no facts); the policy handbook adds the team's own numbers.
GLOSSARY = {
    "eoq": "EOQ (economic order quantity) is the order size that balances ordering cost against holding "
    "cost: the square root of two times annual demand times the cost per order, divided by the yearly "
    "holding cost per unit.",
    "safety stock": "Safety stock is the extra stock held to cover demand and lead-time variability: the "
    "service level's z-value times the standard deviation of demand over the lead time.",
    "reorder point": "The reorder point is the inventory position at which to order: expected demand over "
    "the lead time plus safety stock.",
    "service level": "The cycle service level is the probability of not running out between placing an "
    "order and receiving it; targets are set per ABC class in the policy.",
    "fill rate": "The fill rate is the share of demand served straight from stock.",
    "abc": "ABC classes rank SKUs by yearly sales value: A items make most of the value, C items little.",
    "xyz": "XYZ classes rank SKUs by how variable their demand is: X steady, Y variable, Z erratic.",
    "days of cover": "Days of cover is how many days the stock on hand lasts at the forecast demand.",
    "inventory position": "The inventory position is stock on hand plus open orders minus backorders.",
    "stockout probability": "The stockout probability is the chance that demand over the lead time exceeds "
    "the inventory position, so stock runs out before the next delivery.",
    "interval": "The forecast interval is the range that should hold actual demand in nine periods out of "
    "ten; a wide interval means an uncertain forecast and more safety stock.",
    "order-up-to": "The order-up-to level is the reorder point plus the order quantity; orders fill the "
    "position back up to it.",
    "turnover": "Inventory turnover is yearly demand divided by the average inventory.",
    "approval": "Orders above the approval limits in the procurement policy need a manager's sign-off; see "
    "the policy handbook for the amounts.",
    "expedite": "Expediting asks a supplier to deliver an open order sooner; the policy handbook says when.",
}
TERMS = (
    ("eoq", ("eoq", "economic order")),
    ("safety stock", ("safety stock",)),
    ("reorder point", ("reorder point", "rop")),
    ("fill rate", ("fill rate",)),
    ("service level", ("service level",)),
    ("days of cover", ("days of cover", "cover")),
    ("inventory position", ("inventory position",)),
    ("stockout probability", ("stockout", "stock-out")),
    ("interval", ("interval",)),
    ("order-up-to", ("order-up-to", "order up to")),
    ("turnover", ("turnover",)),
    ("approval", ("approv",)),
    ("expedite", ("expedit",)),
    ("abc", ("abc",)),
    ("xyz", ("xyz",)),
)


def term_of(question: str) -> str | None:
    """The glossary term a definition question is about, or None."""
    low = question.lower()
    for term, keys in TERMS:
        if any(k in low for k in keys):
            return term
    return None


def value_text(fact: Fact) -> str:
    """The fact's value as `format_fact` writes it (with its unit), without the name."""
    return format_fact(fact).split(": ", 1)[1]


def _by_name(facts: Sequence[Fact]) -> dict[str, Fact]:
    return {f.name: f for f in facts}


def _val(facts: dict[str, Fact], name: str) -> str | None:
    f = facts.get(name)
    return value_text(f) if f is not None and f.value is not None else None


def _subject(facts: dict[str, Fact], sku: str | None) -> str:
    desc = facts.get("description")
    if sku and desc is not None and desc.value:
        return f"{sku} ({str(desc.value).strip().lower()})"
    return sku or "this SKU"


def render(intent: str, facts: Sequence[Fact], sku: str | None = None, note: str | None = None) -> str:
    """The plain answer for an intent: a sentence for the headline facts, then every other fact listed."""
    named = _by_name(facts)
    subject = _subject(named, sku)
    sentence = ""
    if intent == "forecast_lookup":
        total = next(
            (f for f in facts if f.name.startswith("forecast next") and "interval" not in f.name), None
        )
        if total is not None:
            low, high = (
                _val(named, f"{total.name}, 90% interval low"),
                _val(named, f"{total.name}, 90% interval high"),
            )
            rng = f" (90% interval {low} to {high})" if low and high else ""
            when = total.name.removeprefix("forecast ")
            sentence = f"The {when} forecast for {subject} is {value_text(total)}{rng}."
    elif intent == "order_advice" and (status := named.get("order status")) is not None:
        qty, by = _val(named, "recommended order quantity"), _val(named, "order by")
        rop, pos = _val(named, "reorder point"), _val(named, "inventory position")
        if str(status.value) == "order now" and qty:
            sentence = f"Order {qty} of {subject} now" + (f" (order by {by})" if by else "") + "."
        else:
            sentence = f"No order is needed for {subject} now (status: {status.value})."
        if rop and pos:
            sentence += f" The inventory position is {pos} against a reorder point of {rop}."
    elif intent == "stockout_risk" and (p := _val(named, "stockout probability before the next delivery")):
        sentence = f"The probability that {subject} runs out before the next delivery is {p}."
        if cover := _val(named, "days of cover"):
            sentence += f" Stock covers {cover}."
    elif intent == "supplier_lead_time":
        lt = _val(named, "lead time") or _val(named, "mean lead time")
        sd = _val(named, "lead time standard deviation")
        who = named.get("supplier")
        name = f"supplier {who.value}" if who is not None else subject
        if lt:
            sentence = (
                f"The lead time for {name} is {lt}" + (f" (standard deviation {sd})" if sd else "") + "."
            )
    elif intent == "what_if":
        new_rop, old_rop = _val(named, "what-if reorder point"), _val(named, "current reorder point")
        new_ss, old_ss = _val(named, "what-if safety stock"), _val(named, "current safety stock")
        if new_rop and new_ss:
            sentence = (
                f"Recomputed for {subject}: safety stock {new_ss} (now {old_ss}) and reorder point {new_rop} "
                f"(now {old_rop})."
            )
            if risk := _val(named, "what-if stockout probability"):
                sentence += f" The stockout probability before the next delivery would be {risk}."
    elif (
        intent == "forecast_change" and (chg := named.get("forecast change vs the previous run")) is not None
    ):
        driver = named.get("forecast change driver")
        sentence = f"The forecast for {subject} changed by {value_text(chg)} against the previous run"
        if pct := _val(named, "forecast change vs the previous run, %"):
            sentence += f" ({pct})"
        sentence += f"; the likely driver is {driver.value}." if driver is not None else "."
    rest = [
        f for f in facts if f.name != "description" and f.value is not None and value_text(f) not in sentence
    ]
    details = ("Figures: " + "; ".join(format_fact(f) for f in rest) + ".") if rest else ""
    parts = [p for p in (note, sentence, details) if p]
    return " ".join(parts) if parts else "I do not have figures for that question."


def unknown_entities(unknown_skus: dict[str, list[str]], unknown_suppliers: dict[str, list[str]]) -> str:
    """'SKU 99999X is not in this run; close matches: ...' for every unknown code or supplier."""
    lines = []
    for code, close in unknown_skus.items():
        hint = f"; close matches: {', '.join(close)}" if close else "; no SKU code is close to it"
        lines.append(f"SKU {code} is not in the current results{hint}.")
    for name, close in unknown_suppliers.items():
        hint = f"; close matches: {', '.join(close)}" if close else ""
        lines.append(f"Supplier {name} is not in the current results{hint}.")
    return " ".join(lines)


def definition(question: str) -> str:
    """A glossary definition for a KPI question (no numbers), or a pointer to the handbook."""
    term = term_of(question)
    if term is None:
        return "That term is not in my glossary; the policy handbook in the sources may explain it."
    return GLOSSARY[term]
