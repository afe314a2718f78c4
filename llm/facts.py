"""Facts: the numbers (and dates) computed by code that the language model is allowed to state."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PERCENT_UNITS = {"%", "percent", "pct", "percentage", "percentage points", "pp"}
RATIO_UNITS = {"ratio", "fraction", "share", "proportion"}
DATE_UNITS = {"date", "day", "datetime"}


@dataclass(frozen=True)
class Fact:
    """One number or date the assistant may state: `Fact("reorder point", 90, "units", "inventory run 3")`.

    `unit` drives matching: "%"/"percent" facts are in percent (12.5); "ratio"/"fraction"/"share" facts are
    fractions (0.125) that the text may also write as "12.5%"; a `datetime.date`/`datetime`/ISO-string value
    (or unit "date") is a date.
    """

    name: str
    value: Any
    unit: str | None = None
    source: str | None = None

    @property
    def unit_kind(self) -> str:
        unit = (self.unit or "").strip().lower()
        if self.date is not None:
            return "date"
        if unit in PERCENT_UNITS or unit.startswith("%") or "percent" in unit:
            return "percent"
        if unit in RATIO_UNITS:
            return "ratio"
        return "number"

    @property
    def number(self) -> float | None:
        """The value as a float, or None when it is not numeric (a date, text, NaN)."""
        value = self.value
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            return float(value) if math.isfinite(float(value)) else None
        if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
            try:
                return Fact(self.name, value.item(), self.unit).number
            except (TypeError, ValueError):
                return None
        if isinstance(value, str) and self.date is None:
            try:
                number = float(value.replace(",", ""))
            except ValueError:
                return None
            return number if math.isfinite(number) else None
        return None

    @property
    def date(self) -> dt.date | None:
        """The value as a date, or None when it is not one."""
        value = self.value
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if hasattr(value, "to_pydatetime"):  # pandas Timestamp
            return value.to_pydatetime().date()
        if isinstance(value, str) and len(value) >= 10:
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                return None
        return None

    def display_value(self) -> Any:
        """The value as shown to the model: ISO dates, floats rounded to what a person would read."""
        if self.date is not None:
            return self.date.isoformat()
        number = self.number
        if number is None:
            return self.value if isinstance(self.value, str | int | float) else str(self.value)
        if number.is_integer() and abs(number) < 1e15:
            return int(number)
        return round(number, 2) if abs(number) >= 1 else float(f"{number:.4g}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.display_value(), "unit": self.unit, "source": self.source}


def as_facts(items: Iterable[Fact | Mapping[str, Any]]) -> list[Fact]:
    """Facts from `Fact` objects or dicts with name/value/unit/source keys."""
    facts = []
    for item in items:
        if isinstance(item, Fact):
            facts.append(item)
        else:
            facts.append(Fact(str(item["name"]), item.get("value"), item.get("unit"), item.get("source")))
    return facts


def format_fact(fact: Fact) -> str:
    """`name: value unit` written so the number guard accepts it (dates as "5 December 2011")."""
    date = fact.date
    if date is not None:
        return f"{fact.name}: {date.day} {date:%B %Y}"
    number = fact.number
    if number is None:
        return f"{fact.name}: {fact.value}"
    kind = fact.unit_kind
    if kind == "ratio":
        return f"{fact.name}: {_format_number(number * 100)}%"
    if kind == "percent":
        return f"{fact.name}: {_format_number(number)}%"
    unit = f" {fact.unit}" if fact.unit else ""
    return f"{fact.name}: {_format_number(number)}{unit}"


def _format_number(number: float) -> str:
    if number.is_integer():
        return f"{int(number):,}"
    text = f"{number:,.2f}" if abs(number) >= 1 else f"{number:.4g}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def facts_sentence(facts: Sequence[Fact]) -> str:
    """The plain fallback answer: every fact as `name: value unit`, with its source."""
    if not facts:
        return "I do not have figures for that question."
    parts = []
    for fact in facts:
        source = f" (source: {fact.source})" if fact.source else ""
        parts.append(format_fact(fact) + source)
    return "; ".join(parts) + "."
