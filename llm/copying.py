"""Number copying: local generation may only write numbers that the guard would accept.

The guard (`llm.guard`) rejects an answer with any number that is not a fact, and the answer then falls
back to a plain template. Most rejections of the shipped adapter were near misses while copying: a digit
changed ("633.14" for 633.13, "427.11" for 427.18), a digit dropped or added ("3.99%" for 0.3979,
"17032" for 1703), or a ratio written as a percent without the factor 100 ("0.038%" for 0.0038).
`NumberCopyProcessor` steers greedy decoding digit by digit (the SmolLM2 tokenizer writes every digit as
its own token) so that each number it writes is one of `NumberForms`: the facts' values as the prompt
shows them, the same rounded to fewer decimals, ratios times 100 before a "%", and numbers inside the
facts' names, sources and text values. The guard still checks every answer: this only spares the
fallback for slips of the pen, it does not decide which fact a number belongs to.

Digits glued to a letter or an underscore ("FOODS_3_090", "Q4") belong to identifiers and are left
alone; a product code that starts with digits ("85123A") may be any such code the prompt holds. A code of
digits only ("23166") is a number to the guard, so it must come from the facts like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from llm.facts import Fact
from llm.numbers import extract_numbers

# A product code that starts with digits glued to letters ("85123A", "84029G"): its digits are not a number.
_CODE = re.compile(r"(?<![\w.])(\d+)[A-Za-z_]\w*")
_MAX_DECIMALS = 10
# Chosen on 60 validation examples of the shipped adapter (guarded, no retries): fallback 13.3% without
# the constraint, 6.7% with a margin of 3, 0% with 6 or more (ROUGE-L 0.581 -> 0.596).
MARGIN = 6.0


def _decimal(value: float) -> str:
    """`abs(value)` as a plain decimal without trailing zeros ("0.0038", "1648", "12.5")."""
    text = f"{abs(value):.{_MAX_DECIMALS}f}".rstrip("0").rstrip(".")
    return text or "0"


def _roundings(value: float) -> set[str]:
    """The decimal form of `value` and its roundings to fewer decimals that keep its leading digit
    (633.13 -> "633.13", "633.1", "633"; 0.0038 -> "0.0038", "0.004"), as the guard allows."""
    exact = _decimal(value)
    forms = {exact}
    decimals = len(exact.split(".")[1]) if "." in exact else 0
    for places in range(decimals):
        if 10.0**-places <= abs(value):
            forms.add(_decimal(round(abs(value), places)))
    return forms


def _literal_forms(text: str) -> tuple[set[str], set[str]]:
    """(plain, percent) forms of the numbers the guard reads in `text` (not digits inside identifiers)."""
    plain: set[str] = set()
    percent: set[str] = set()
    for mention in extract_numbers(text):
        if mention.kind == "date":
            plain |= _date_parts(mention.year, mention.month, mention.day)
        elif mention.value is not None and mention.kind != "word":
            form = _decimal(mention.value)
            (percent if mention.kind == "percent" else plain).add(form)
    return plain, percent


@dataclass(frozen=True)
class NumberForms:
    """The number strings (without thousands separators or signs) that generation may write.

    `plain`: numbers written without a percent sign; `percent`: numbers written before "%".
    """

    plain: frozenset[str]
    percent: frozenset[str]

    @classmethod
    def from_facts(
        cls, facts: Sequence[Fact], allowed_texts: Iterable[str] = (), codes_from: Iterable[str] = ()
    ) -> NumberForms:
        """Forms of every fact (value, name, source), the numbers in `allowed_texts` (what the guard also
        accepts) and the leading digits of product codes such as "85123A" found in `codes_from`."""
        plain: set[str] = set()
        percent: set[str] = set()
        texts = [*allowed_texts]
        for fact in facts:
            texts.append(f"{fact.name} {fact.source or ''}")
            number, date, kind = fact.number, fact.date, fact.unit_kind
            if date is not None:
                plain |= _date_parts(date.year, date.month, date.day)
            elif number is not None:
                if kind == "ratio":
                    plain |= _roundings(number)
                    percent |= _roundings(number * 100)
                else:
                    plain |= _roundings(number)
                    if kind == "percent":
                        percent |= _roundings(number)
                if isinstance(fact.value, float) and float(fact.value).is_integer():
                    plain.add(f"{abs(fact.value):.1f}")  # the prompt's JSON shows 1648.0
            elif fact.value is not None:
                texts.append(str(fact.value))
        for text in texts:
            found_plain, found_percent = _literal_forms(text)
            plain |= found_plain
            percent |= found_percent
        for text in codes_from:
            for match in _CODE.finditer(text):
                plain.add(match.group(1))
        return cls(frozenset(plain), frozenset(percent))

    @cached_property
    def prefixes(self) -> frozenset[str]:
        """Every non-empty prefix of every form."""
        return frozenset(s[:k] for s in self.plain | self.percent for k in range(1, len(s) + 1))

    @cached_property
    def comma_prefixes(self) -> frozenset[str]:
        """Prefixes after which a thousands separator fits (a multiple of three integer digits follow)."""
        out = set()
        for s in self.plain | self.percent:
            whole = s.split(".")[0]
            out.update(whole[:k] for k in range(1, len(whole)) if (len(whole) - k) % 3 == 0)
        return frozenset(out)


def _date_parts(year: int | None, month: int | None, day: int | None) -> set[str]:
    """How a date's parts may be written: the year, and the month and day with or without a leading 0."""
    parts = {str(year)} if year is not None else set()
    for part in (month, day):
        if part is not None:
            parts |= {str(part), f"{part:02d}"}
    return parts


@dataclass(frozen=True)
class _Vocabulary:
    """Token ids by role: single digits, the decimal point, the comma, and tokens starting with "%"."""

    digits: dict[int, str]
    dot: tuple[int, ...]
    comma: tuple[int, ...]
    percent: tuple[int, ...]
    last_char: dict[int, str]


@lru_cache(maxsize=4)
def _vocabulary(tokenizer: Any) -> _Vocabulary:
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    return _Vocabulary(
        digits={i: p for i, p in enumerate(pieces) if len(p) == 1 and p in "0123456789"},
        dot=tuple(i for i, p in enumerate(pieces) if p == "."),
        comma=tuple(i for i, p in enumerate(pieces) if p == ","),
        percent=tuple(i for i, p in enumerate(pieces) if p.lstrip().startswith("%")),
        last_char={i: p[-1] for i, p in enumerate(pieces) if p},
    )


class NumberCopyProcessor:
    """A transformers logits processor that keeps every number being written a prefix of a `NumberForms`
    form, and lets it end only where it is complete (before "%" only for percent forms).

    `prompt_len`: where the generated tokens start in `input_ids`. `margin`: the constraint steps in only
    when the best allowed token's logit is within `margin` of the best token's. A model that strongly
    wants a number the facts do not hold (or a word where a digit is required) then writes it, and the
    guard rejects the answer, instead of being forced into an odd but accepted string ("0. 0x036..." in a
    hard-constrained test run).
    """

    def __init__(self, tokenizer: Any, forms: NumberForms, prompt_len: int, margin: float = MARGIN) -> None:
        self.forms = forms
        self.prompt_len = prompt_len
        self.margin = margin
        self.vocab = _vocabulary(tokenizer)
        self.digit_ids = {d: i for i, d in self.vocab.digits.items()}
        self.first_digits = {s[0] for s in forms.plain | forms.percent}

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row in range(input_ids.shape[0]):
            allowed = self.allowed(input_ids[row, self.prompt_len :].tolist())
            if allowed is None:
                continue
            mask = torch.full((scores.shape[-1],), bool(allowed.get("other", False)))
            for ids, ok in allowed.items():
                if isinstance(ids, tuple) and ids:
                    mask[list(ids)] = ok
            if not mask.any():
                continue
            constrained = scores[row].masked_fill(~mask, float("-inf"))
            if constrained.max() >= scores[row].max() - self.margin:
                scores[row] = constrained
        return scores

    def allowed(self, ids: list[int]) -> dict[Any, bool] | None:
        """Which token groups may come next after the generated `ids`; None when nothing is constrained.

        Keys: a tuple of token ids -> whether they are allowed; "other" -> all remaining tokens.
        """
        v, forms = self.vocab, self.forms
        chars = []
        i = len(ids) - 1
        while i >= 0 and (ids[i] in v.digits or ids[i] in v.dot or ids[i] in v.comma):
            chars.append(v.digits.get(ids[i]) or ("." if ids[i] in v.dot else ","))
            i -= 1
        run = "".join(reversed(chars))
        lead = len(run) - len(run.lstrip(".,"))
        run = run[lead:]
        before = run and lead == 0 and i >= 0 and v.last_char.get(ids[i], " ")
        if before and (before.isalnum() or before == "_"):
            return None  # digits inside an identifier
        if not run:
            starts = tuple(t for d, t in self.digit_ids.items() if d not in self.first_digits)
            before_char = v.last_char.get(ids[-1], " ") if ids else " "
            if before_char.isalnum() or before_char == "_":
                return None
            return {"other": True, starts: False}
        sep = run[-1] if run[-1] in ".," else ""
        core = run.rstrip(".,").replace(",", "")
        norm = run.replace(",", "")
        out: dict[Any, bool] = {}
        digits_ok = tuple(t for d, t in self.digit_ids.items() if norm + d in forms.prefixes)
        digits_no = tuple(t for d, t in self.digit_ids.items() if norm + d not in forms.prefixes)
        out[digits_ok], out[digits_no] = True, False
        if sep:
            out[v.dot] = out[v.comma] = False
            out[v.percent] = False
            out["other"] = core in forms.plain
        else:
            out[v.dot] = norm + "." in forms.prefixes or core in forms.plain
            out[v.comma] = norm in forms.comma_prefixes or core in forms.plain
            out[v.percent] = core in forms.percent
            out["other"] = core in forms.plain
        return out


def copy_constraint(
    tokenizer: Any, forms: NumberForms | None, prompt_len: int, margin: float | None = None
) -> list[Any]:
    """The logits processors for `forms`; none when `forms` is None or empty (with no number to copy,
    such as an off-topic question, steering digits only pushes the model into other text).
    `margin` None: `MARGIN`."""
    if forms is None or not (forms.plain or forms.percent):
        return []
    return [NumberCopyProcessor(tokenizer, forms, prompt_len, MARGIN if margin is None else margin)]
