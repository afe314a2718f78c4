"""Entities in a question: SKUs (codes exactly, product names fuzzily), stores, categories, suppliers,
periods ("next month", "next 4 weeks") and what-if settings ("99% service level", "lead time doubles").

Everything is resolved against the FactBook of the active run, so a code that the run does not have is
reported as unknown (with close matches) instead of being guessed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecasting.factbook import FactBook

NAME_SCORE = 86.0  # rapidfuzz WRatio a product name must reach to count as named
TOKEN_SET_SCORE = 90.0  # rapidfuzz token_set_ratio for a description named with other words around it
SUGGEST_SCORE = 60.0
MAX_SKUS = 3
PERIOD_DAYS = {"day": 1, "week": 7, "month": 30, "quarter": 91, "year": 365}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "eight": 8, "twelve": 12}
FACTORS = {"doubl": 2.0, "twice": 2.0, "tripl": 3.0, "three times": 3.0, "halv": 0.5, "half": 0.5}

_TOKEN = re.compile(r"(?<![\w/-])[A-Za-z0-9][A-Za-z0-9_/\-]*[A-Za-z0-9](?![\w/-])")
_PERIOD = re.compile(
    r"\b(?:next|coming|following|upcoming)\s+(?:(?P<n>\d{1,3}|" + "|".join(NUMBER_WORDS) + r")\s+)?"
    r"(?P<unit>day|week|month|quarter|year)(?P<plural>s)?\b",
    re.IGNORECASE,
)
_SERVICE = re.compile(
    r"(?P<pct>\d{2}(?:\.\d+)?)\s?(?:%|percent)\s*(?:cycle\s+)?service|service[- ]level\s+(?:of\s+|at\s+|"
    r"to\s+|=\s*|is\s+|were\s+|was\s+)?(?P<pct2>\d{2}(?:\.\d+)?)\s?(?:%|percent)|"
    r"service[- ]level\s+(?:of\s+|at\s+|to\s+)?(?P<frac>0\.\d+)",
    re.IGNORECASE,
)
_LEAD = re.compile(r"lead[- ]?times?|supplier|vendor|deliver", re.IGNORECASE)
_LEAD_FACTOR = re.compile(r"(?P<x>\d+(?:\.\d+)?)\s?(?:x|times)\b", re.IGNORECASE)
_LEAD_PCT = re.compile(
    r"(?P<sign>up|rises?|increases?|longer|\+|down|drops?|decreases?|shorter|-)\s*(?:by\s+)?"
    r"(?P<pct>\d{1,3})\s?%",
    re.IGNORECASE,
)
_LEAD_DAYS = re.compile(
    r"lead[- ]?time\s+(?:of|is|were|was|to|becomes|at)\s+(?P<days>\d{1,3}(?:\.\d+)?)\s+days?", re.IGNORECASE
)
_SUPPLIER = re.compile(
    r"\b(?:supplier|vendor)\s+(?:#\s*)?(?P<name>[\w&'.\- ]{2,40}?)(?=\s*(?:[?,;!]|$|\.\s|\s+"
    r"(?:and|for|on|in|take|takes|deliver|delivers|is|was|has|lead|how|compared)\b))",
    re.IGNORECASE,
)
_STOP = frozenset(
    "a an the of for to in on at and or is are was were be will would should could can do does did i we you "
    "our my me us it its this that these those what whats what's which who how much many when why next "
    "week weeks month months day days quarter year please tell show give about with item items product "
    "products sku skus units unit order reorder forecast demand stock risk sell sales supplier lead time "
    "expected need buy purchase point safety level service compare versus vs".split()
)


@dataclass
class Period:
    """A period the question names, in the run's own periods (`periods`) and as words (`label`)."""

    label: str
    periods: int


@dataclass
class Scenario:
    """What-if settings: a cycle service level (0-1) and/or a lead-time change (factor or days)."""

    service_level: float | None = None
    lead_time_factor: float | None = None
    lead_time_days: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.service_level, self.lead_time_factor, self.lead_time_days))


@dataclass
class Entities:
    """What a question names, resolved against the run; `unknown_*` carry close matches to suggest."""

    skus: list[str] = field(default_factory=list)
    matched_by: dict[str, str] = field(default_factory=dict)
    unknown_skus: dict[str, list[str]] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    suppliers: list[str] = field(default_factory=list)
    unknown_suppliers: dict[str, list[str]] = field(default_factory=dict)
    period: Period | None = None
    scenario: Scenario = field(default_factory=Scenario)

    @property
    def any(self) -> bool:
        """Whether the question names anything in the run (or something that looks like a code)."""
        return bool(
            self.skus
            or self.stores
            or self.categories
            or self.suppliers
            or self.unknown_skus
            or self.unknown_suppliers
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["period"] = asdict(self.period) if self.period else None
        out["scenario"] = {k: v for k, v in asdict(self.scenario).items() if v is not None}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entities:
        """Rebuild from `to_dict()` output (session history keeps entities as JSON)."""
        data = dict(data)
        period = data.pop("period", None)
        scenario = data.pop("scenario", None) or {}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known, period=Period(**period) if period else None, scenario=Scenario(**scenario))


def looks_like_code(token: str) -> bool:
    """A token that is probably a product code: letters and digits mixed, an underscore id, or 5+ digits."""
    if "_" in token and any(c.isdigit() for c in token):
        return True
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    if has_digit and has_alpha:
        return len(token) >= 4 and not re.fullmatch(r"\d+(?:st|nd|rd|th|x|pm|am|k|m|s|d|w)", token, re.I)
    return token.isdigit() and 5 <= len(token) <= 8


def period_of(question: str, book: FactBook) -> Period | None:
    """'next month' -> 4 weeks on weekly data (30 days, rounded to whole periods, at least one)."""
    m = _PERIOD.search(question)
    if not m or (m["plural"] and not m["n"]):  # "the next weeks": no length given
        return None
    n_text = (m["n"] or "1").lower()
    n = int(NUMBER_WORDS.get(n_text, n_text))
    unit = m["unit"].lower()
    run_days = PERIOD_DAYS.get(book.period, 1)
    periods = max(1, int(round(n * PERIOD_DAYS[unit] / run_days)))
    label = f"next {n} {unit}s" if n > 1 else f"next {unit}"
    return Period(label=label, periods=periods)


def scenario_of(question: str) -> Scenario:
    """Service level and lead-time changes stated in a what-if question."""
    s = Scenario()
    m = _SERVICE.search(question)
    if m:
        s.service_level = float(m["frac"]) if m["frac"] else float(m["pct"] or m["pct2"]) / 100.0
    if _LEAD.search(question):
        low = question.lower()
        for word, factor in FACTORS.items():
            if word in low:
                s.lead_time_factor = factor
                break
        if s.lead_time_factor is None and (m := _LEAD_FACTOR.search(question)):
            s.lead_time_factor = float(m["x"])
        if s.lead_time_factor is None and (m := _LEAD_PCT.search(question)):
            down = m["sign"].lower().startswith(("down", "drop", "decrease", "shorter", "-"))
            pct = float(m["pct"]) / 100.0
            s.lead_time_factor = round(1.0 - pct if down else 1.0 + pct, 4)
        if m := _LEAD_DAYS.search(question):
            s.lead_time_days = float(m["days"])
    return s


def _stopped(text: str) -> str:
    words = re.findall(r"[A-Za-z][A-Za-z'\-]*", text)
    return " ".join(w for w in words if w.lower() not in _STOP)


def resolve(question: str, book: FactBook) -> Entities:
    """Find the SKUs, stores, categories, suppliers, period and what-if settings a question names."""
    ent = Entities(period=period_of(question, book), scenario=scenario_of(question))
    question = _join_item_store(question, book)
    stores = {s.upper(): s for s in book.stores()}
    categories = {c.upper(): c for c in book.categories()}
    item_hits: list[set[str]] = []
    for token in _TOKEN.findall(question):
        key = token.upper()
        if key in stores:
            ent.stores.append(stores[key])
            continue
        if key in categories:
            ent.categories.append(categories[key])
            continue
        exact = [s for s, score in book.match_skus(token, limit=20) if score >= 95.0]
        full = [s for s in exact if s.upper() == key]
        if full:
            item_hits.append(set(full))
        elif exact:
            item_hits.append(set(exact))
        elif looks_like_code(token) and not _is_quantity(question, token):
            close = [s for s, score in book.match_skus(token, limit=3) if score >= SUGGEST_SCORE]
            ent.unknown_skus[token] = close
    for hits in item_hits:
        chosen = sorted(hits)
        if ent.stores and len(chosen) > 1:  # an item named without its store: narrow by the stores named
            narrowed = [s for s in chosen if any(book.attributes(s).get("store") == st for st in ent.stores)]
            chosen = narrowed or chosen
        for sku in chosen[:MAX_SKUS]:
            if sku not in ent.skus:
                ent.skus.append(sku)
                ent.matched_by[sku] = "code"
    for m in _SUPPLIER.finditer(question):
        name = m["name"].strip(" .'")
        hits = book.match_suppliers(name)
        if hits and hits[0][1] >= NAME_SCORE:
            ent.suppliers.append(hits[0][0])
        elif name.lower() not in _STOP and not _names_a_sku(name, ent):
            ent.unknown_suppliers[name] = [h for h, _ in hits[:3]]
    if not ent.skus and not ent.unknown_skus:
        _match_names(question, book, ent)
    ent.stores = list(dict.fromkeys(ent.stores))
    return ent


_ITEM_AT = re.compile(r"\b([\w-]+)\s+(?:at|in|for|from)\s+(?:the\s+)?(?:store\s+)?([\w-]+)\b", re.IGNORECASE)


def _join_item_store(question: str, book: FactBook) -> str:
    """ "FOODS_3_090 at store CA_1" -> "FOODS_3_090/CA_1" when that item/store id is a SKU of the run."""
    ids = getattr(book, "_entity_ids", None)
    if ids is None:
        ids = {s.upper(): s for s in book.skus if "/" in s}
        book._entity_ids = ids

    def join(m: re.Match[str]) -> str:
        sku = ids.get(f"{m[1]}/{m[2]}".upper())
        return sku if sku else m[0]

    return _ITEM_AT.sub(join, question) if ids else question


def _names_a_sku(name: str, ent: Entities) -> bool:
    return any(s.upper() in name.upper() or name.upper() in s.upper() for s in ent.skus)


def _is_quantity(question: str, token: str) -> bool:
    """A number followed by units or a percent sign is a quantity, not a product code."""
    return bool(
        re.search(re.escape(token) + r"\s*(?:%|percent|units?|pcs|pieces|days?|weeks?)", question, re.I)
    )


def _descriptions(book: FactBook) -> dict[str, str]:
    """SKU -> normalised description (lower case, single spaces), built once per FactBook."""
    cached = getattr(book, "_entity_descriptions", None)
    if cached is None:
        cached = {}
        for sku in book.skus:
            desc = book.description(sku)
            if desc:
                cached[sku] = " ".join(re.findall(r"[a-z0-9]+", desc.lower()))
        book._entity_descriptions = cached
    return cached


def _match_names(question: str, book: FactBook, ent: Entities) -> None:
    """Product names: a description the question contains word for word (the longest wins), else the best
    token-set match of the question's content words (rapidfuzz), else `FactBook.match_skus` (WRatio)."""
    from rapidfuzz import fuzz, process

    descs = _descriptions(book)
    if descs:
        words = " " + " ".join(re.findall(r"[a-z0-9]+", question.lower())) + " "
        inside = [(len(d), s) for s, d in descs.items() if len(d) >= 6 and f" {d} " in words]
        if inside:
            sku = max(inside)[1]
            ent.skus.append(sku)
            ent.matched_by[sku] = "name"
            return
        content = " ".join(w for w in words.split() if w not in _STOP)
        if len(content) >= 4:
            keys = list(descs)
            hit = process.extractOne(content, [descs[k] for k in keys], scorer=fuzz.token_set_ratio)
            shared = set(hit[0].split()) & set(content.split()) if hit else set()
            if hit and hit[1] >= TOKEN_SET_SCORE and len(shared) >= max(2, 0.6 * len(hit[0].split())):
                sku = keys[hit[2]]
                ent.skus.append(sku)
                ent.matched_by[sku] = "name"
                return
    text = _stopped(question)
    if len(text) < 4:
        return
    hits = book.match_skus(text, limit=5)
    if hits and hits[0][1] >= NAME_SCORE:
        sku = hits[0][0]
        ent.skus.append(sku)
        ent.matched_by[sku] = "name"


def periods_label(period: Period | None, book: FactBook, default: int | None = None) -> tuple[int, str]:
    """Periods to sum and their label: the named period (capped at the horizon) or `default` periods."""
    horizon = max(1, book.horizon or 1)
    n = period.periods if period else (default or horizon)
    n = max(1, min(n, horizon))
    word = book.period
    return n, (f"next {word}" if n == 1 else f"next {n} {word}s")
