"""The number guard: every number in generated text must match a fact it was given, within rounding.

Matching rules (see `mention_matches`):
- A number matches a fact when the fact, rounded to the precision the text shows, equals it: 304.05 may be
  written "304", "304.1" or "304.05" (not "300", unless written "about 300": two significant figures).
  Thousands separators and k/m/bn are normalised first ("1,250", "1.25k").
- "12.5%" matches a percent fact 12.5 or a ratio fact 0.125; a plain "0.125" matches the ratio fact.
- Without an explicit sign, "12" matches a fact of -12 too ("a drop of 12 units"); "-12" needs a negative
  fact. Rounding may not wipe out the leading digit: a fact of 0.95 does not allow "1".
- Dates match date facts on the parts the text shows ("Dec 5" matches 2011-12-05); a year in a date context
  ("in 2011") matches a date fact of that year or a numeric fact 2011.
- Numbers that appear literally in the user's question or in the facts' names and sources are allowed.
- Counting words: spelled-out numbers and ordinals up to ten ("one of", "two SKUs", "1st") are allowed
  without a fact; digits are always checked. List markers ("1. ") and identifiers ("85123A", "CA_1") are
  not numbers at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm.facts import Fact, facts_sentence
from llm.numbers import NumberMention, extract_numbers

log = logging.getLogger(__name__)

SMALL_COUNT_MAX = 10
_REL = 1e-9


@dataclass(frozen=True)
class Match:
    """A number in the text and what allowed it (a fact name, "question", "counting word")."""

    text: str
    allowed_by: str


@dataclass
class GuardResult:
    """Outcome of checking one text: how many numbers were checked, which were rejected, and `ok`."""

    numbers_checked: int
    numbers_rejected: list[str]
    matches: list[Match] = field(default_factory=list)
    prompt_leak: bool = False

    @property
    def ok(self) -> bool:
        return not self.numbers_rejected and not self.prompt_leak

    def to_dict(self) -> dict[str, Any]:
        return {
            "numbers_checked": self.numbers_checked,
            "numbers_rejected": list(self.numbers_rejected),
            "prompt_leak": self.prompt_leak,
            "ok": self.ok,
            "matches": [{"text": m.text, "allowed_by": m.allowed_by} for m in self.matches],
        }


def _close(value: float, target: float, quantum: float) -> bool:
    """True when `target` rounded to `quantum` gives `value` (half-quantum tolerance, float-safe).

    Rounding may not wipe out the leading digit: 0.95 does not match "1", 0.3 does not match "0".
    """
    if abs(value - target) <= _REL * max(1.0, abs(target)):
        return True
    if quantum > abs(target) * (1 + 1e-6):
        return False
    return abs(value - target) <= quantum / 2 * (1 + 1e-6) + _REL * max(1.0, abs(target))


def _date_matches(mention: NumberMention, fact: Fact) -> bool:
    date = fact.date
    if date is None:
        return False
    if mention.kind == "year":
        return mention.year == date.year
    if mention.kind != "date":
        return False
    readings = [(mention.month, mention.day)]
    if mention.day_month_ambiguous:
        readings.append((mention.day, mention.month))
    year_ok = mention.year is None or mention.year == date.year
    return year_ok and any(
        (m is None or m == date.month) and (d is None or d == date.day) for m, d in readings
    )


def mention_matches(mention: NumberMention, fact: Fact) -> bool:
    """Whether one number or date in the text is this fact, within the rounding the text shows."""
    if mention.kind in ("date", "time"):
        return mention.kind == "date" and _date_matches(mention, fact)
    if mention.kind == "year" and _date_matches(mention, fact):
        return True
    number = fact.number
    if number is None or mention.value is None:
        return False
    unit_kind = fact.unit_kind
    targets: list[float] = []
    if mention.kind == "percent":
        if unit_kind in ("percent", "number") and (unit_kind == "percent" or not fact.unit):
            targets.append(number)
        if unit_kind == "ratio":
            targets.append(number * 100)
    else:
        targets.append(number)
    value = mention.value
    for target in targets:
        if mention.signed or value < 0:
            if _close(value, target, mention.quantum):
                return True
        elif _close(abs(value), abs(target), mention.quantum):
            return True
    return False


def _same_mention(a: NumberMention, b: NumberMention) -> bool:
    """Whether two mentions state the same number or date (used for numbers copied from the question)."""
    if a.kind in ("date", "year") or b.kind in ("date", "year"):
        return (a.year, a.month, a.day) == (b.year, b.month, b.day) or (
            a.value is not None and a.value == b.value
        )
    if a.kind == "time" or b.kind == "time":
        return a.text.strip().lower() == b.text.strip().lower()
    if a.value is None or b.value is None:
        return False
    if (a.kind == "percent") != (b.kind == "percent"):
        return False
    return abs(a.value - b.value) <= _REL * max(1.0, abs(b.value))


def check_numbers(
    text: str,
    facts: Sequence[Fact],
    question: str | None = None,
    allowed_texts: Iterable[str] = (),
    allow_small_counts: bool = True,
) -> GuardResult:
    """Check every number and date in `text` against `facts` (and the question's own numbers)."""
    sources = [(question or "", "question")] + [(t, "allowed text") for t in allowed_texts]
    sources += [(f"{f.name} {f.source or ''}", f"{f.name} (name or source)") for f in facts]
    allowed = [(m, label) for src, label in sources for m in extract_numbers(src)]
    mentions = extract_numbers(text)
    rejected: list[str] = []
    matches: list[Match] = []
    for mention in mentions:
        by = _allowed_by(mention, facts, allowed, allow_small_counts)
        if by is None:
            rejected.append(mention.text)
        else:
            matches.append(Match(mention.text, by))
    return GuardResult(numbers_checked=len(mentions), numbers_rejected=rejected, matches=matches)


def _allowed_by(
    mention: NumberMention,
    facts: Sequence[Fact],
    allowed: Sequence[tuple[NumberMention, str]],
    allow_small_counts: bool,
) -> str | None:
    for fact in facts:
        if mention_matches(mention, fact):
            return fact.name
    for other, origin in allowed:
        if _same_mention(mention, other):
            return origin
    small = mention.value is not None and 0 <= mention.value <= SMALL_COUNT_MAX and mention.value.is_integer()
    if allow_small_counts and mention.kind in ("word", "ordinal") and small:
        return "counting word"
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def leaks_prompt(text: str, secrets: Iterable[str], span: int = 8) -> bool:
    """True when `text` repeats `span` consecutive words of a secret (the rules, the prompt's headings)."""
    if re.search(r"</?\s*(?:documents|question)\s*>|^\s*Facts \(JSON\)", text, re.IGNORECASE | re.MULTILINE):
        return True  # the prompt's own data tags or heading echoed back
    words = _words(text)
    if len(words) < span:
        return False
    seen = {" ".join(words[i : i + span]) for i in range(len(words) - span + 1)}
    for secret in secrets:
        s = _words(secret)
        if len(s) < span:
            if s and " ".join(s) in " ".join(words):
                return True
            continue
        if any(" ".join(s[i : i + span]) in seen for i in range(len(s) - span + 1)):
            return True
    return False


@dataclass
class GuardedAnswer:
    """The text to show, and how it was obtained: attempts, numbers checked and rejected, fallback."""

    text: str
    fallback_used: bool
    attempts: int
    numbers_checked: int
    numbers_rejected: list[str]
    checks: list[GuardResult] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and self.checks[-1].ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "fallback_used": self.fallback_used,
            "attempts": self.attempts,
            "numbers_checked": self.numbers_checked,
            "numbers_rejected": list(self.numbers_rejected),
            "ok": self.ok,
        }


def guarded_generate(
    writer: Any,
    messages: Sequence[dict[str, str]],
    facts: Sequence[Fact],
    fallback: Callable[[Sequence[Fact]], str] = facts_sentence,
    question: str | None = None,
    max_new_tokens: int | None = None,
    retries: int = 1,
    secrets: Iterable[str] | None = None,
    max_sentences: int | None = None,
    numbers: Any = None,
) -> GuardedAnswer:
    """Generate, check numbers, regenerate once with a stricter instruction, else use `fallback(facts)`.

    `writer` is any object with `generate(messages, max_new_tokens, max_sentences)` (see
    `llm.generate.Writer`); `numbers` (`llm.copying.NumberForms`) is passed on to it when given. An empty
    reply counts as a failed attempt, and so does one that repeats the rules or the prompt's own headings
    (`secrets`, by default `llm.prompts.PROMPT_SECRETS`). The fallback text is checked too (it should pass
    by construction).
    """
    from llm.prompts import PROMPT_SECRETS, stricter_messages

    secrets = list(PROMPT_SECRETS if secrets is None else secrets)

    checks: list[GuardResult] = []
    generations: list[str] = []
    rejected_all: list[str] = []
    current = list(messages)
    for attempt in range(retries + 1):
        extra = {} if numbers is None else {"numbers": numbers}
        text = writer.generate(current, max_new_tokens, max_sentences, **extra).strip()
        generations.append(text)
        result = check_numbers(text, facts, question=question)
        result.prompt_leak = leaks_prompt(text, secrets)
        checks.append(result)
        rejected_all.extend(result.numbers_rejected)
        if result.ok and text:
            return GuardedAnswer(
                text=text,
                fallback_used=False,
                attempts=attempt + 1,
                numbers_checked=sum(c.numbers_checked for c in checks),
                numbers_rejected=rejected_all,
                checks=checks,
                generations=generations,
            )
        current = stricter_messages(messages, result.numbers_rejected)
    text = fallback(facts)
    result = check_numbers(text, facts, question=question)
    if not result.ok:
        log.warning("fallback text has numbers that are not facts: %s", result.numbers_rejected)
    checks.append(result)
    return GuardedAnswer(
        text=text,
        fallback_used=True,
        attempts=len(generations),
        numbers_checked=sum(c.numbers_checked for c in checks),
        numbers_rejected=rejected_all,
        checks=checks,
        generations=generations,
    )
