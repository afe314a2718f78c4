"""Evaluate the answer writers on the instruction test split: base model, LoRA model, template fallback.

Each system answers every test prompt twice over: raw (what the writer produced, less an unfinished last
sentence when the token limit cut it off) and guarded (what the user sees after `llm.guard.guarded_generate`
with the assistant's settings: its retries, number copying (`llm.copying`, when
`STOCKPILOT_LLM_COPY_NUMBERS` is on; raw text is never steered), numbers in text-valued facts allowed,
else the template fallback). Metrics, per system and for both raw and guarded text:

- ROUGE-1/2/L F1 against the reference (`rouge-score`, stemmed).
- Number precision: share of the numbers in the answer that match a fact (the guard's matching, within the
  rounding the text shows; numbers in the question or inside text-valued facts count as matched); an
  answer without numbers counts as precise. Number recall: share of the reference's numbers the answer
  states; F1 of the two (micro-averaged over all answers).
- Hallucination rate: share of answers with at least one number that matches no fact.
- Fact recall: share of the facts the reference states (numbers, dates, and text values such as an order
  status) that the answer states too.
- Perplexity of the reference answers under the model (answer tokens only), tokens/s of generation, and
  the guard's fallback rate.

Generations are cached under `<home>/eval/generations.jsonl` keyed by model, adapter hash, prompt and token
limit (and the copying forms and margin), so a later run (e.g. after training a new adapter) regenerates
only what changed.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecasting.errors import InputError
from forecasting.io import atomic_write_text
from llm.assistant import RETRIES, fact_texts, number_forms
from llm.facts import Fact, as_facts
from llm.generate import Generation, GenerationStats
from llm.guard import check_numbers, guarded_generate, mention_matches
from llm.numbers import extract_numbers
from llm.train import encode_example, mean_response_loss, read_jsonl, record_messages

SYSTEMS = ("base", "lora", "template")
METRIC_KEYS = (
    "rouge1",
    "rouge2",
    "rougeL",
    "number_precision",
    "number_recall",
    "number_f1",
    "hallucination_rate",
    "fact_recall",
    "fallback_rate",
)
DEFAULT_MAX_NEW_TOKENS = 96


# ------------------------------------------------------------------------------------------- metrics


def _fact_hit(mention: Any, facts: Sequence[Fact]) -> Fact | None:
    return next((f for f in facts if mention_matches(mention, f)), None)


def stated_facts(text: str, facts: Sequence[Fact]) -> set[str]:
    """Names of the facts a text states: a number or date matching the fact, or the text value verbatim."""
    names = set()
    for mention in extract_numbers(text):
        hit = _fact_hit(mention, facts)
        if hit is not None:
            names.add(hit.name)
    low = text.lower()
    for fact in facts:
        if fact.number is None and fact.date is None and isinstance(fact.value, str):
            value = fact.value.strip().lower()
            if 2 < len(value) <= 40 and value in low:
                names.add(fact.name)
    return names


@dataclass
class AnswerScore:
    """Scores of one answer against its reference and facts."""

    rouge: dict[str, float]
    numbers: int
    numbers_matched: int
    reference_numbers: int
    reference_numbers_stated: int
    hallucinated: bool
    fact_recall: float | None


def score_answer(text: str, reference: str, facts: Sequence[Fact], question: str, scorer: Any) -> AnswerScore:
    """ROUGE F1s, number matches against the facts, and recall of the reference's numbers and facts."""
    rouge = {k: v.fmeasure for k, v in scorer.score(reference, text).items()}
    check = check_numbers(text, facts, question=question, allowed_texts=[fact_texts(facts)])
    ref_mentions = [m for m in extract_numbers(reference) if _fact_hit(m, facts) is not None]
    out_mentions = extract_numbers(text)
    stated = 0
    for ref in ref_mentions:
        fact = _fact_hit(ref, facts)
        if any(mention_matches(m, fact) for m in out_mentions):
            stated += 1
    ref_facts = stated_facts(reference, facts)
    out_facts = stated_facts(text, facts)
    recall = len(ref_facts & out_facts) / len(ref_facts) if ref_facts else None
    return AnswerScore(
        rouge=rouge,
        numbers=check.numbers_checked,
        numbers_matched=check.numbers_checked - len(check.numbers_rejected),
        reference_numbers=len(ref_mentions),
        reference_numbers_stated=stated,
        hallucinated=bool(check.numbers_rejected),
        fact_recall=recall,
    )


def aggregate(scores: Sequence[AnswerScore], fallbacks: Sequence[bool] | None = None) -> dict[str, float]:
    """Mean ROUGE, micro-averaged number precision/recall/F1, rates, mean fact recall."""
    n = max(len(scores), 1)
    out = {k: sum(s.rouge[k] for s in scores) / n for k in ("rouge1", "rouge2", "rougeL")}
    numbers = sum(s.numbers for s in scores)
    matched = sum(s.numbers_matched for s in scores)
    ref = sum(s.reference_numbers for s in scores)
    stated = sum(s.reference_numbers_stated for s in scores)
    precision = matched / numbers if numbers else 1.0
    recall = stated / ref if ref else 1.0
    out["number_precision"] = precision
    out["number_recall"] = recall
    out["number_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out["hallucination_rate"] = sum(s.hallucinated for s in scores) / n
    recalls = [s.fact_recall for s in scores if s.fact_recall is not None]
    out["fact_recall"] = sum(recalls) / len(recalls) if recalls else 1.0
    out["fallback_rate"] = sum(fallbacks) / n if fallbacks else 0.0
    return {k: round(v, 4) for k, v in out.items()}


# ------------------------------------------------------------------------------------------- generation


class GenerationCache:
    """Generated texts on disk (JSON lines), keyed by writer identity, prompt and token limit."""

    def __init__(self, path: Path):
        self.path = path
        self.items: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.items[row["key"]] = row

    @staticmethod
    def key(identity: str, messages: Sequence[Mapping[str, str]], max_new_tokens: int | None) -> str:
        blob = json.dumps([identity, list(messages), max_new_tokens], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.items.get(key)
        return row if row is not None and "truncated" in row else None  # older rows lack the cut-off flag

    def put(self, key: str, generation: Generation) -> None:
        stats = generation.stats
        row = {
            "key": key,
            "text": generation.text,
            "new_tokens": stats.new_tokens,
            "seconds": round(stats.seconds, 4),
            "truncated": stats.truncated,
        }
        self.items[key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:  # append-only log: a crash loses one line
            handle.write(json.dumps(row) + "\n")


class CachedWriter:
    """A writer that answers from the cache when it can and records new generations (with their speed)."""

    def __init__(self, writer: Any, identity: str, cache: GenerationCache):
        self.writer = writer
        self.identity = identity
        self.cache = cache
        self.new_tokens = 0
        self.seconds = 0.0

    def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: Any = None,
    ) -> str:
        identity = self.identity + (f":sentences={max_sentences}" if max_sentences else "")
        if numbers is not None:
            identity += f":copy={hash_forms(numbers)}"
        key = self.cache.key(identity, messages, max_new_tokens)
        row = self.cache.get(key)
        if row is None:
            generation = self.writer.complete(messages, max_new_tokens, max_sentences, numbers=numbers)
            self.cache.put(key, generation)
            row = self.cache.get(key)
        self.new_tokens += int(row["new_tokens"] or 0)
        self.seconds += float(row["seconds"])
        stats = GenerationStats(new_tokens=row["new_tokens"], truncated=bool(row["truncated"]))
        return Generation(str(row["text"]), stats, max_sentences).reply

    @property
    def tokens_per_second(self) -> float | None:
        return round(self.new_tokens / self.seconds, 2) if self.seconds > 0 else None


def hash_forms(forms: Any) -> str:
    """A short digest of `NumberForms` and the copying margin, so constrained generations are cached
    apart."""
    from llm.copying import MARGIN

    blob = json.dumps([sorted(forms.plain), sorted(forms.percent), MARGIN])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def template_answer(record: Mapping[str, Any]) -> str:
    """The plain answer shown when the guard rejects the model: the assistant's per-intent template
    (`llm.templates.render`, with the glossary definition for KPI questions), the refusal for off-topic
    questions, and the weekly report's plain summary for the weekly summary."""
    from llm import templates

    facts = as_facts(record["facts"])
    intent = record["intent"]
    if intent == "out_of_scope":
        return templates.REFUSAL
    if intent == "weekly_summary":
        from api.report_weekly import fallback_summary

        return fallback_summary(facts)
    sku = record.get("sku") if "+" not in str(record.get("sku")) else None
    note = templates.definition(record["question"]) if intent == "kpi_definition" else None
    return templates.render(intent, facts, sku, note)


def adapter_identity(folder: Path) -> str:
    """A short hash of the adapter weights (changes whenever the adapter is retrained)."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.glob("adapter_model.*")):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Per-system metrics (guarded and `raw_...`), per-example outputs and run information."""

    metrics: dict[str, dict[str, Any]]
    examples: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {name: dict(values) for name, values in self.metrics.items()}


def load_test_records(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """Test examples, spread over intents when limited (round-robin by intent, file order within one)."""
    records = read_jsonl(path)
    if not records:
        raise InputError(f"{path}: no examples")
    if not limit or limit >= len(records):
        return records
    by_intent: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_intent.setdefault(record["intent"], []).append(record)
    picked: list[dict[str, Any]] = []
    queues = [list(v) for _, v in sorted(by_intent.items())]
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def evaluate(
    records: Sequence[Mapping[str, Any]],
    systems: Sequence[str] = SYSTEMS,
    adapter: Path | None = None,
    cache_path: Path | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Run the systems on `records` and score them (see the module docstring)."""
    import torch
    from rouge_score import rouge_scorer

    from forecasting.settings import get_settings
    from llm.config import LLMSettings, get_llm_settings
    from llm.generate import LocalWriter
    from llm.model import load_model, resolve_adapter

    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise InputError(f"unknown system {unknown[0]!r}: choose from {', '.join(SYSTEMS)}")
    say = progress or (lambda _m: None)
    settings = get_llm_settings()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    cache = GenerationCache(cache_path or get_settings().home / "eval" / "generations.jsonl")
    threads = threads or settings.generation_threads
    metrics: dict[str, dict[str, Any]] = {}
    examples = [
        {"intent": r["intent"], "sku": r["sku"], "question": r["question"], "reference": r["output"]}
        for r in records
    ]
    info: dict[str, Any] = {"examples": len(records), "max_new_tokens": max_new_tokens, "threads": threads}
    for system in systems:
        started = time.perf_counter()
        raw_scores, guarded_scores, fallbacks = [], [], []
        writer = None
        loaded = None
        if system in ("base", "lora"):
            plain = LLMSettings(**{**settings.model_dump(), "llm_adapter": "none"})
            folder = None
            if system == "lora":
                folder = adapter or resolve_adapter(settings)
                if folder is None:
                    raise InputError(
                        "no LoRA adapter: train one with `stockpilot train-llm` or give --adapter"
                    )
            # the adapter is merged into the float32 weights before they are set to the inference precision
            loaded = load_model(plain, adapter=Path(folder) if folder else False)
            identity = f"{loaded.source}:{loaded.checkpoint.name}"
            if loaded.info["dtype"] != "float32":
                identity += f":{loaded.info['dtype']}"
            info["dtype"] = loaded.info["dtype"]
            if folder is not None:
                identity += f"+lora:{adapter_identity(Path(folder))}"
                info["adapter"] = str(folder)
            writer = CachedWriter(
                LocalWriter(loaded, max_new_tokens=max_new_tokens, threads=threads), identity, cache
            )
        for i, record in enumerate(records):
            facts = as_facts(record["facts"])
            messages = record_messages(record)
            question = record["question"]
            fallback = template_answer(record)
            if writer is None:
                raw = guarded = fallback
                used_fallback = False
            else:
                raw = writer.generate(messages, max_new_tokens).strip()
                numbers = number_forms(facts, messages) if settings.llm_copy_numbers else None
                answer = guarded_generate(
                    writer, messages, facts, fallback=lambda _f, text=fallback: text,
                    question=fact_texts(facts), max_new_tokens=max_new_tokens, retries=RETRIES,
                    numbers=numbers,
                )  # fmt: skip
                guarded, used_fallback = answer.text, answer.fallback_used
            raw_scores.append(score_answer(raw, record["output"], facts, question, scorer))
            guarded_scores.append(score_answer(guarded, record["output"], facts, question, scorer))
            fallbacks.append(used_fallback)
            examples[i][system] = {"raw": raw, "guarded": guarded, "fallback": used_fallback}
            if (i + 1) % 10 == 0 or i + 1 == len(records):
                say(f"{system}: {i + 1}/{len(records)}")
        values: dict[str, Any] = aggregate(guarded_scores, fallbacks)
        raw_values = aggregate(raw_scores)
        values.update({f"raw_{k}": v for k, v in raw_values.items() if k != "fallback_rate"})
        if loaded is not None:
            with _threads(threads):
                encoded = [e for e in (encode_example(loaded.tokenizer, r, 2048) for r in records) if e]
                pad = loaded.tokenizer.pad_token_id
                loss = mean_response_loss(loaded.model, encoded, pad if pad is not None else 0)
            values["perplexity"] = round(math.exp(loss), 3)
            values["tokens_per_second"] = writer.tokens_per_second if writer else None
        else:
            values["perplexity"] = None
            values["tokens_per_second"] = None
        values["seconds"] = round(time.perf_counter() - started, 1)
        metrics[system] = values
        if system == "lora":
            del loaded
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return EvalResult(metrics=metrics, examples=examples, info=info)


class _threads:
    """Torch threads for a block (restored afterwards)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.before)


# ------------------------------------------------------------------------------------------- report

TABLE_KEYS = (
    ("rougeL", "ROUGE-L"),
    ("rouge1", "ROUGE-1"),
    ("rouge2", "ROUGE-2"),
    ("number_precision", "number precision"),
    ("number_recall", "number recall"),
    ("number_f1", "number F1"),
    ("hallucination_rate", "hallucination rate"),
    ("fact_recall", "fact recall"),
    ("fallback_rate", "fallback rate"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table_rows(result: EvalResult) -> list[list[str]]:
    """Rows: metric, then 'raw / guarded' per system; perplexity and tokens/s at the end."""
    systems = list(result.metrics)
    rows = []
    for key, label in TABLE_KEYS:
        row = [label]
        for s in systems:
            m = result.metrics[s]
            raw = m.get(f"raw_{key}")
            row.append(_fmt(m[key]) if raw is None else f"{_fmt(raw)} / {_fmt(m[key])}")
        rows.append(row)
    for key, label in (("perplexity", "perplexity (reference)"), ("tokens_per_second", "tokens/s")):
        rows.append([label] + [_fmt(result.metrics[s].get(key)) for s in systems])
    return rows


def targets(result: EvalResult) -> list[tuple[str, bool]]:
    """The issue's targets for the LoRA model, each met or not."""
    lora, base = result.metrics.get("lora"), result.metrics.get("base")
    if lora is None:
        return []
    out = [
        ("LoRA ROUGE-L >= 0.60 (guarded)", lora["rougeL"] >= 0.60),
        ("LoRA number precision >= 0.95 before the guard", lora["raw_number_precision"] >= 0.95),
        ("LoRA number precision = 1.0 after the guard", lora["number_precision"] >= 1.0),
        ("LoRA fallback rate < 10%", lora["fallback_rate"] < 0.10),
    ]
    if base is not None:
        higher = (
            "rouge1",
            "rouge2",
            "rougeL",
            "number_precision",
            "number_recall",
            "number_f1",
            "fact_recall",
        )
        lower = ("hallucination_rate", "fallback_rate")
        keys = [*higher, *(f"raw_{k}" for k in higher), *lower, "raw_hallucination_rate", "perplexity"]
        worse = [k for k in keys if k in lora and _worse(k, lora[k], base[k], lower)]
        out.append(
            (
                "LoRA better than base on every metric" + (f" (not: {', '.join(worse)})" if worse else ""),
                not worse,
            )
        )
    return out


def _worse(key: str, lora: float, base: float, lower: Sequence[str]) -> bool:
    if lora is None or base is None:
        return False
    smaller_is_better = key.removeprefix("raw_") in lower or key == "perplexity"
    return lora > base if smaller_is_better else lora < base


def markdown_report(
    result: EvalResult, chart: str | None = None, command: str = "stockpilot eval-llm"
) -> str:
    systems = list(result.metrics)
    lines = [
        "# LLM evaluation: base vs LoRA vs template",
        "",
        f"`{command}` on {result.info['examples']} test examples (split by SKU), greedy decoding, "
        f"at most {result.info['max_new_tokens']} new tokens. Cells: raw / after the number guard.",
        "",
        "| metric | " + " | ".join(systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    checks = targets(result)
    if checks:
        lines += ["", "## Targets", ""] + [f"- [{'x' if ok else ' '}] {name}" for name, ok in checks]
    if chart:
        lines += ["", f"![metrics]({chart})"]
    samples = result.examples[:6]
    if samples:
        lines += ["", "## Sample answers", ""]
        for ex in samples:
            lines.append(f"**{ex['intent']}** - {ex['question']}")
            lines.append(f"- reference: {ex['reference']}")
            for s in systems:
                if s in ex:
                    lines.append(f"- {s}: {ex[s]['guarded']}" + (" (fallback)" if ex[s]["fallback"] else ""))
            lines.append("")
    return "\n".join(lines) + "\n"


def html_report(markdown_text: str, result: EvalResult, chart: str | None) -> str:
    systems = list(result.metrics)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in systems)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(result)
    )
    checks = "".join(f"<li>{'met' if ok else 'missed'}: {html.escape(n)}</li>" for n, ok in targets(result))
    img = f'<img src="{html.escape(chart)}" alt="metrics chart">' if chart else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>LLM evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h1>LLM evaluation: base vs LoRA vs template</h1>"
        f"<p>{result.info['examples']} test examples; cells are raw / after the number guard.</p>"
        f"<table><tr><th>metric</th>{head}</tr>{body}</table><ul>{checks}</ul>{img}</body></html>"
    )


def plot(result: EvalResult, path: Path) -> Path:
    """Grouped bars: ROUGE-L, number precision, number F1, fact recall, hallucination and fallback rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("rougeL", "number_precision", "number_f1", "fact_recall", "hallucination_rate", "fallback_rate")
    systems = list(result.metrics)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(systems), 1)
    for i, system in enumerate(systems):
        values = [result.metrics[system][k] for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], values, width, label=system)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("_", " ") for k in keys], rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_title("Answer quality after the number guard (test split)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_reports(result: EvalResult, folder: Path, command: str) -> dict[str, Path]:
    """`llm_eval.md`, `llm_eval.html`, `llm_eval.png` and `llm_eval.json` (metrics + examples) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    chart = plot(result, folder / "llm_eval.png")
    md = markdown_report(result, chart.name, command)
    atomic_write_text(folder / "llm_eval.md", md)
    atomic_write_text(folder / "llm_eval.html", html_report(md, result, chart.name))
    payload = {"metrics": result.metrics, "info": result.info, "examples": result.examples}
    atomic_write_text(folder / "llm_eval.json", json.dumps(payload, indent=2))
    return {"markdown": folder / "llm_eval.md", "html": folder / "llm_eval.html", "chart": chart}
