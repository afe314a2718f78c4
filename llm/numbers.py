"""Find the numbers a text states, normalised, so the guard can check each one against the facts.

`extract_numbers("ROP 90, 1,250 units, 12.5%, $1.2m, due Dec 5")` gives 90, 1250, 12.5 (percent), 1200000
(money) and a date (month 12, day 5). Every mention records the precision the text shows (`quantum`: "304.1"
-> 0.1, "3.2k" -> 100) so a fact can be matched "within rounding".

Not numbers: digits inside identifiers ("85123A", "FOODS_3_090/CA_1", "SKU-123", "Q4", "v1.2"), and list
markers at the start of a line ("1. ", "2) "). Years inside dates are part of the date, not quantities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["number", "percent", "money", "ordinal", "word", "year", "date", "time"]

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4, "may": 5,
    "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9,
    "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
}  # fmt: skip
_MONTH = r"(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)"
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_SCALE = r"(?:k|K|mn|m|M|bn|\s?thousand|\s?million|\s?billion)"
_PCT = r"(?:\s?%|\s?per\s?cent\b|\s?percent(?:age points?)?\b|\s?pp\b)"
_CUR = r"(?:[$€£¥]|(?:USD|EUR|GBP)\s?)"
# Left edge: not glued to a word, a decimal point, or "WORD-" / "WORD/" (identifiers like SKU-123, CA/1).
_LEFT = r"(?<![\w.])(?<!\w-)(?<!\w/)(?<!\w–)"
# Right edge: not glued to more word characters (85123A, 3_090) nor to "-X9" / "/X9" identifier tails.
_RIGHT = r"(?![\w])(?!-\w*\d)(?!/\w*[\d_])(?!\.\d)"
_SIGN = r"(?P<{name}>(?<![\w.)\]%])[-−+])?"

SCALES = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "bn": 1e9, "billion": 1e9}
WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_WORD_NUM = (
    rf"(?:(?:{_TENS})(?:[-\s](?:{_UNITS}))?|{'|'.join(sorted(WORDS, key=len, reverse=True))})"
    r"(?:\s+(?:hundred|thousand|million|billion))?"
)
_APPROX = re.compile(
    r"(?:\babout|\baround|\bapproximately|\bapprox\.?|\broughly|\bnearly|\balmost|\bsome|\bcirca|~|≈)\s*$",
    re.IGNORECASE,
)
_YEAR_CONTEXT = re.compile(
    r"(?:\b(?:in|since|from|of|year|fy|until|till|by|before|after|during|through|to|and|q[1-4]|h[12])"
    r"|[(,])\s*$",
    re.IGNORECASE,
)

_PATTERN = re.compile(
    rf"""
    (?P<iso>{_LEFT}(?P<iy>\d{{4}})[-/](?P<im>\d{{1,2}})[-/](?P<id>\d{{1,2}})
        (?:[T\s]\d{{1,2}}:\d{{2}}(?::\d{{2}})?)?{_RIGHT})
  | (?P<ym>{_LEFT}(?P<ymy>\d{{4}})-(?P<ymm>0[1-9]|1[0-2]){_RIGHT})
  | (?P<dmy>{_LEFT}(?P<nd1>\d{{1,2}})[/.](?P<nd2>\d{{1,2}})[/.](?P<ny>\d{{4}}|\d{{2}}){_RIGHT})
  | (?P<mdy>(?<![\w])(?P<mm>{_MONTH})\s+
        (?:(?P<my>\d{{4}})|(?P<md>\d{{1,2}}){_ORD}?(?:,?\s+(?P<mdyy>\d{{4}}))?){_RIGHT})
  | (?P<dm>{_LEFT}(?P<dd>\d{{1,2}}){_ORD}?\s+(?:of\s+)?(?P<dmm>{_MONTH})(?:,?\s+(?P<dy>\d{{4}}))?(?![\w]))
  | (?P<time>{_LEFT}\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:\s?[ap]\.?m\b\.?)?{_RIGHT})
  | (?P<range>{_LEFT}{_SIGN.format(name="rsign")}(?P<rcur>{_CUR})?(?P<lo>{_NUM})(?P<loscale>{_SCALE})?
        (?P<lopct>%)?\s*[-–—]\s*(?P<rcur2>{_CUR})?(?P<hi>{_NUM})(?P<hiscale>{_SCALE})?(?P<hipct>{_PCT})?
        (?P<rx>[x×])?{_RIGHT})
  | (?P<single>{_LEFT}{_SIGN.format(name="sign")}(?P<cur>{_CUR})?(?P<num>{_NUM})(?P<scale>{_SCALE})?
        (?:(?P<pct>{_PCT})|(?P<ord>{_ORD})|(?P<x>[x×]))?{_RIGHT})
  | (?P<word>\b{_WORD_NUM}\b)
    """,
    re.VERBOSE | re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*][ \t]+)?\d{1,2}[.)](?=[ \t])", re.MULTILINE)


@dataclass(frozen=True)
class NumberMention:
    """One number found in a text.

    `value` is normalised (thousands separators removed, `k`/`m`/`bn` applied; percentages in percent, so
    "12.5%" is 12.5). `quantum` is the place value of the last digit shown, times the scale ("3.2k" -> 100),
    so any fact within `quantum / 2` of `value` rounds to what the text shows. Dates carry
    `year`/`month`/`day` (missing parts are None) and no value.
    """

    text: str
    start: int
    end: int
    kind: Kind
    value: float | None = None
    quantum: float = 1.0
    signed: bool = False
    approx: bool = False
    year: int | None = None
    month: int | None = None
    day: int | None = None
    day_month_ambiguous: bool = False

    @property
    def is_date(self) -> bool:
        return self.kind in ("date", "year", "time")


def _decimals(num: str) -> int:
    return len(num.split(".", 1)[1]) if "." in num else 0


def _scale(text: str | None) -> float:
    if not text:
        return 1.0
    return SCALES[text.strip().lower()]


def _number(
    text: str,
    start: int,
    end: int,
    num: str,
    scale: str | None,
    sign: str | None,
    kind: Kind,
    approx: bool,
) -> NumberMention:
    raw = num.replace(",", "")
    factor = _scale(scale)
    value = float(raw) * factor
    quantum = 10.0 ** -_decimals(raw) * factor
    if approx and "." not in raw:
        digits = len(raw.lstrip("0")) or 1
        quantum = max(quantum, 10.0 ** max(digits - 2, 0) * factor)  # "about 300": two significant figures
    if sign and sign in "-−":
        value = -value
    return NumberMention(text, start, end, kind, value, quantum, signed=bool(sign), approx=approx)


def _valid_date(year: int | None, month: int | None, day: int | None) -> bool:
    return (month is None or 1 <= month <= 12) and (day is None or 1 <= day <= 31)


def _word_value(text: str) -> float:
    parts = re.split(r"[-\s]+", text.lower())
    value = 0.0
    for part in parts:
        if part in WORDS:
            value += WORDS[part]
        elif part == "hundred":
            value *= 100
        elif part in SCALES:
            value *= SCALES[part]
    return value


def extract_numbers(text: str) -> list[NumberMention]:
    """All number, percent, money, ordinal, spelled-out number, year, date and time mentions in `text`."""
    skip = {m.start(): m.end() for m in _LIST_MARKER.finditer(text)}
    found: list[NumberMention] = []
    for m in _PATTERN.finditer(text):
        start, end = m.span()
        if any(s <= start < e for s, e in skip.items()):
            continue
        approx = bool(_APPROX.search(text[max(0, start - 16) : start]))
        raw = m.group(0)
        if m["iso"]:
            y, mo, d = int(m["iy"]), int(m["im"]), int(m["id"])
            if _valid_date(y, mo, d):
                found.append(NumberMention(raw, start, end, "date", year=y, month=mo, day=d))
        elif m["ym"]:
            found.append(NumberMention(raw, start, end, "date", year=int(m["ymy"]), month=int(m["ymm"])))
        elif m["dmy"]:
            a, b, y = int(m["nd1"]), int(m["nd2"]), int(m["ny"])
            y = y + 2000 if y < 100 else y
            # Day/month order is ambiguous in "05/12/2011": keep the month/day reading when it is valid.
            mo, d = (a, b) if a <= 12 else (b, a)
            if _valid_date(y, mo, d):
                swap = a <= 12 and b <= 12 and a != b
                found.append(
                    NumberMention(raw, start, end, "date", year=y, month=mo, day=d, day_month_ambiguous=swap)
                )
        elif m["mdy"]:
            mo = MONTHS[m["mm"].rstrip(".").lower()]
            if m["my"]:
                found.append(NumberMention(raw, start, end, "date", year=int(m["my"]), month=mo))
            else:
                d = int(m["md"])
                y = int(m["mdyy"]) if m["mdyy"] else None
                if _valid_date(y, mo, d):
                    found.append(NumberMention(raw, start, end, "date", year=y, month=mo, day=d))
        elif m["dm"]:
            d, mo = int(m["dd"]), MONTHS[m["dmm"].rstrip(".").lower()]
            y = int(m["dy"]) if m["dy"] else None
            if _valid_date(y, mo, d):
                found.append(NumberMention(raw, start, end, "date", year=y, month=mo, day=d))
        elif m["time"]:
            found.append(NumberMention(raw, start, end, "time"))
        elif m["range"]:
            found.extend(_range(m, approx))
        elif m["single"]:
            found.append(_single(text, m, approx))
        elif m["word"]:
            found.append(NumberMention(raw, start, end, "word", value=_word_value(raw), approx=approx))
    return found


def _single(text: str, m: re.Match[str], approx: bool) -> NumberMention:
    start, end = m.span()
    kind: Kind = "number"
    if m["pct"]:
        kind = "percent"
    elif m["cur"]:
        kind = "money"
    elif m["ord"]:
        kind = "ordinal"
    num = m["num"]
    plain_int = re.fullmatch(r"\d{4}", num) and not (m["scale"] or m["sign"] or kind != "number" or m["x"])
    if plain_int and 1900 <= int(num) <= 2100 and _YEAR_CONTEXT.search(text[max(0, start - 12) : start]):
        return NumberMention(m.group(0), start, end, "year", value=float(num), year=int(num))
    return _number(m.group(0), start, end, num, m["scale"], m["sign"], kind, approx)


def _range(m: re.Match[str], approx: bool) -> list[NumberMention]:
    """Both ends of "80-95", "80-95%", "$1.2-1.5m", "2010-2011"; a shared unit applies to both ends."""
    lo, hi = m["lo"], m["hi"]
    pct = bool(m["hipct"] or m["lopct"])
    money = bool(m["rcur"] or m["rcur2"])
    kind: Kind = "percent" if pct else "money" if money else "number"
    hi_scale = m["hiscale"]
    lo_scale = m["loscale"] or hi_scale
    hi_start = m.start("hi")
    lo_end = m.end("lopct") if m["lopct"] else m.end("loscale") if m["loscale"] else m.end("lo")
    first_text = m.group(0)[: lo_end - m.start()]
    second_text = m.group(0)[hi_start - m.start() :]
    if kind == "number" and all(re.fullmatch(r"\d{4}", v) and 1900 <= int(v) <= 2100 for v in (lo, hi)):
        return [
            NumberMention(first_text, m.start(), lo_end, "year", float(lo), year=int(lo)),
            NumberMention(second_text, hi_start, m.end(), "year", float(hi), year=int(hi)),
        ]
    return [
        _number(first_text, m.start(), lo_end, lo, lo_scale, m["rsign"], kind, approx),
        _number(second_text, hi_start, m.end(), hi, hi_scale, None, kind, approx),
    ]
