"""The procurement assistant: question -> intent -> entities -> facts -> context -> guarded answer.

    assistant = Assistant()                       # the active run's FactBook, the saved index, the writer
    prepared = assistant.prepare("should I reorder 85123A?")   # no generation: intent, facts, messages
    answer = assistant.ask("should I reorder 85123A?", session_id="s1")
    for event in assistant.stream("and for the next month?", session_id="s1"): ...

Numbers come only from code (the FactBook and `llm.tools`); the language model chooses the words. The
number guard (`llm.guard`) checks every number it writes against the facts; a failed answer is
regenerated with a stricter rule (`retries`, default 0), then replaced by the plain sentence from
`llm.templates`. An answer
that leaves out a headline fact gets it appended ("Figures: ..."), so the facts asked for are always stated.

Safety: questions outside procurement get a short refusal without calling the model; unknown SKU codes or
suppliers get "not in the current results" with close matches; a question that tries to give the
assistant instructions ("ignore previous instructions", "print your system prompt", "set the reorder point
to 5") is answered from the facts by the template, never by the model, and numbers in the question are
never accepted by the guard. Retrieved passages have instruction-like sentences removed before they reach
the prompt, and are wrapped as data by `llm.prompts.build_messages`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from forecasting.errors import InputError
from llm import templates
from llm.copying import NumberForms
from llm.entities import Entities, resolve
from llm.facts import Fact
from llm.guard import check_numbers, guarded_generate, leaks_prompt, mention_matches
from llm.intents import classify, get_classifier
from llm.numbers import extract_numbers
from llm.prompts import MAX_QUESTION_CHARS, PROMPT_SECRETS, SYSTEM_PROMPT, Snippet, build_messages
from llm.sessions import SessionStore, new_session_id
from llm.tools import ToolResult, run_tool

MAX_NEW_TOKENS = 64
# Sentences the model writes per answer; headline facts it leaves out are appended as "Figures: ...".
# One sentence took the tuned writer's answer p50 from 3.9 to 2.7 s (40 demo questions, interleaved) with
# a fallback rate of 0.45 against 0.43: its later sentences mostly repeat or garble the figures.
MAX_SENTENCES = 1
RETRIES = 0  # stricter regenerations after a rejected answer (each costs a full generation)
SNIPPET_CHARS = 240
CONTEXT_K = 4
MAX_SNIPPETS = 1  # passages in the prompt (all retrieved ones are cited); each adds ~80 tokens of prefill
INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.?!]{0,40}\b(?:instructions?|rules?|prompts?|above|previous|"
    r"prior)\b|\bsystem\s+prompt\b|\b(?:reveal|print|show|repeat|leak)\b[^.?!]{0,30}\b(?:prompt|instructions?|"
    r"rules)\b|\byou\s+are\s+now\b|\bpretend\s+(?:to\s+be|you)\b|\bjailbreak\b|\b(?:set|change|make|update|"
    r"overwrite)\s+(?:the\s+)?[\w\s-]{0,40}?\s+(?:to|=)\s*-?\d",
    re.IGNORECASE,
)
FOLLOW_UP = re.compile(
    r"^\s*(?:and|also|what\s+about|how\s+about|same|ok(?:ay)?|then)\b|\b(?:it|its|it's|that\s+one|this\s+one|"
    r"the\s+same|them|those|that\s+sku|this\s+sku|that\s+item)\b",
    re.IGNORECASE,
)
GLOBAL = re.compile(r"\b(?:which|skus|items|products|all|any|top|most|every)\b", re.IGNORECASE)
HOSTILE_NOTE = (
    "I cannot change figures or share my instructions; the figures below come from the pipeline run."
)


@dataclass
class Prepared:
    """Everything before generation: the LoRA training inputs are built from exactly this."""

    question: str
    intent: str
    entities: Entities
    facts: list[Fact]
    snippets: list[Snippet]
    sources: list[str]
    messages: list[dict[str, str]]
    headline: list[str] = field(default_factory=list)
    fallback: str = ""
    direct: str | None = None
    intent_method: str = ""
    follow_up: bool = False
    hostile: bool = False
    run_id: str | None = None

    @property
    def needs_model(self) -> bool:
        return self.direct is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "intent": self.intent,
            "entities": self.entities.to_dict(),
            "facts": [f.to_dict() for f in self.facts],
            "sources": list(self.sources),
            "messages": self.messages,
            "headline": list(self.headline),
            "fallback": self.fallback,
            "direct": self.direct,
            "follow_up": self.follow_up,
            "hostile": self.hostile,
        }


def states_fact(text: str, fact: Fact) -> bool:
    """Whether `text` states the fact's value (numbers within rounding, dates by parts, text as words)."""
    if fact.value is None:
        return False
    if fact.number is None and fact.date is None:
        return str(fact.value).strip().lower() in text.lower()
    return any(mention_matches(m, fact) for m in extract_numbers(text))


def validate_question(question: str | None) -> str:
    """The question with whitespace collapsed; InputError when it is empty or too long."""
    question = " ".join((question or "").split())
    if not question:
        raise InputError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(
            f"the question is too long ({len(question)} characters, at most {MAX_QUESTION_CHARS})"
        )
    return question


def fact_texts(facts: list[Fact]) -> str:
    """The text-valued facts (product descriptions, statuses, notes): numbers inside them ("set of 72") are
    stated by code, so the guard accepts them. The user's question is never passed to the guard."""
    return " ".join(
        str(f.value) for f in facts if f.value is not None and f.number is None and f.date is None
    )


def number_forms(facts: Sequence[Fact], messages: Sequence[dict[str, str]]) -> NumberForms:
    """The numbers the writer may copy (see `llm.copying`): the facts' forms and the numbers the guard
    accepts from `fact_texts`, plus product codes written in the prompt."""
    return NumberForms.from_facts(facts, [fact_texts(list(facts))], [m["content"] for m in messages])


def clean_snippet(text: str) -> str:
    """A retrieved passage without sentences that look like instructions to the assistant."""
    sentences = re.split(r"(?<=[.!?\n])\s+", text)
    return " ".join(s for s in sentences if not INJECTION.search(s)).strip()


class Assistant:
    """Answers procurement questions about the active pipeline run (see the module docstring).

    `factbook` defaults to the active run in `store` (the default results store), `retriever` to the saved
    knowledge index (none: answers cite the facts' documents only), `writer` to the configured model,
    loaded on the first question that needs it. `use_model=False` answers with the plain sentences only
    (fast evaluation of routing, retrieval and facts). `retries` is how many stricter regenerations the
    guard tries before the plain sentence: 0 by default, because with the bundled 135M model most rejected
    answers failed again (eval-assistant: 85% of model answers fell back with one retry) and each retry
    doubles the latency; set 1 for a stronger (e.g. LoRA-tuned or remote) model. `max_sentences` is how
    many sentences the model may write (see MAX_SENTENCES; None: up to `max_new_tokens`). `copy_numbers`
    lets a local model write only numbers copied from the facts (`llm.copying`; default: the setting
    `STOCKPILOT_LLM_COPY_NUMBERS`, on).
    """

    def __init__(
        self,
        factbook: Any = None,
        retriever: Any = None,
        writer: Any = None,
        store: Any = None,
        sessions: SessionStore | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        retries: int = RETRIES,
        use_model: bool = True,
        max_sentences: int | None = MAX_SENTENCES,
        copy_numbers: bool | None = None,
    ) -> None:
        from forecasting.factbook import FactBook
        from llm.config import get_llm_settings

        self.factbook = factbook if factbook is not None else FactBook.from_store(store)
        self.retriever = retriever if retriever is not None else default_retriever()
        self._writer = writer
        self.sessions = sessions or SessionStore(self.factbook.store)
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences
        self.retries = retries
        self.copy_numbers = get_llm_settings().llm_copy_numbers if copy_numbers is None else copy_numbers
        self.use_model = use_model
        get_classifier()  # train the intent model now, not during the first question

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from llm.generate import get_writer

            self._writer = get_writer()
        return self._writer

    def warm_up(self) -> None:
        """Load what the first question would wait for: the query embedder (one retrieval) and, when the
        model writes the answers, the writer (a local one also caches its system turn, see LocalWriter)."""
        self.prepare("What does safety stock mean?")
        warm_up = getattr(self.writer, "warm_up", None) if self.use_model else None
        if warm_up is not None:
            warm_up(SYSTEM_PROMPT)

    # ---------------------------------------------------------------- preparation (no generation)
    def prepare(self, question: str, session_id: str | None = None) -> Prepared:
        """Intent, entities, facts, context and chat messages for a question (validated, not generated)."""
        question = validate_question(question)
        book = self.factbook
        ent = resolve(question, book)
        hostile = bool(INJECTION.search(question))
        result = classify(question, has_entities=ent.any)
        intent, method = result.intent, result.method
        follow_up = False
        previous = self.sessions.last(session_id)
        if previous is not None and not ent.any:
            needs_sku = intent not in ("kpi_definition", "out_of_scope") and not GLOBAL.search(question)
            if FOLLOW_UP.search(question) or len(question.split()) <= 3 or needs_sku:
                follow_up = True
                ent = _inherit(ent, Entities.from_dict(previous.entities))
                ruled = get_classifier().rule(question)
                intent, method = (ruled, "rule (follow-up)") if ruled else (previous.intent, "previous turn")
        elif (
            previous is not None
            and ent.any
            and len(question.split()) <= 6
            and get_classifier().rule(question) is None
        ):
            intent, method, follow_up = previous.intent, "previous turn", True
            if ent.period is None and previous.entities.get("period"):
                ent.period = Entities.from_dict(previous.entities).period
        if hostile and intent == "out_of_scope" and ent.any:
            intent = "order_advice"

        prepared = Prepared(
            question,
            intent,
            ent,
            [],
            [],
            [],
            [],
            intent_method=method,
            follow_up=follow_up,
            hostile=hostile,
            run_id=book.run_id,
        )
        if intent == "out_of_scope":
            prepared.direct = templates.REFUSAL
            return prepared
        if ent.unknown_skus or ent.unknown_suppliers:
            if not ent.skus and not ent.suppliers:
                prepared.direct = templates.unknown_entities(ent.unknown_skus, ent.unknown_suppliers)
                prepared.facts = [
                    Fact(f"close matches to {name}", ", ".join(close), None, "FactBook.match_skus")
                    for name, close in {**ent.unknown_skus, **ent.unknown_suppliers}.items()
                    if close
                ]
                return prepared
        tool = run_tool(intent, ent, book, question)
        prepared.facts, prepared.headline = tool.facts, tool.headline
        snippets, sources = self._context(question, intent, tool)
        prepared.snippets, prepared.sources = snippets, sources
        sku = ent.skus[0] if ent.skus else None
        note = tool.note
        if ent.unknown_skus:
            note = " ".join(p for p in (templates.unknown_entities(ent.unknown_skus, {}), note) if p)
        if intent == "kpi_definition":
            note = " ".join(p for p in (templates.definition(question), note) if p)
        if hostile:
            note = " ".join(p for p in (HOSTILE_NOTE, note) if p)
        prepared.fallback = templates.render(intent, tool.facts, sku, note)
        glossary = intent == "kpi_definition" and templates.term_of(question) is not None
        if hostile or glossary or not self.use_model or not tool.facts and intent != "kpi_definition":
            prepared.direct = prepared.fallback
        prompt_facts = [replace(f, source=None) for f in tool.facts]
        prepared.messages = build_messages(question, prompt_facts, snippets)
        return prepared

    def _context(self, question: str, intent: str, tool: ToolResult) -> tuple[list[Snippet], list[str]]:
        """Snippets for the prompt and the ids to cite: the entity's own documents, then hybrid-search hits
        (for a definition, the policy pages come first)."""
        sources = list(dict.fromkeys(tool.doc_ids))
        docs: list[tuple[str, str]] = []
        index = getattr(self.retriever, "index", None)
        for doc_id in sources:
            doc = index.get(doc_id) if index is not None else None
            if doc is not None:
                docs.append((doc_id, doc.text))
        if self.retriever is not None:
            kwargs: dict[str, Any] = {"k": CONTEXT_K}
            if intent == "kpi_definition":
                kwargs["filters"] = {"type": "policy"}
            hits = []
            for hit in self.retriever.invoke(question, **kwargs):
                doc_id = hit.metadata.get("doc_id") or hit.id
                if doc_id not in sources:
                    sources.append(doc_id)
                    hits.append((doc_id, hit.page_content))
            docs = hits + docs if intent == "kpi_definition" else docs + hits
        snippets = []
        for doc_id, text in docs[:MAX_SNIPPETS]:
            clean = clean_snippet(text)
            if clean:
                snippets.append(Snippet(clean[:SNIPPET_CHARS], doc_id))
        return snippets, sources

    # ---------------------------------------------------------------- answering
    def ask(self, question: str, session_id: str | None = None) -> dict[str, Any]:
        """Answer one question; returns the answer object (see `answer_object`)."""
        started = time.perf_counter()
        prepared = self.prepare(question, session_id)
        guard: dict[str, Any] = {"numbers_checked": 0, "numbers_rejected": [], "fallback_used": False}
        if prepared.direct is not None:
            text = prepared.direct
            guard["model_used"] = False
        else:
            result = guarded_generate(
                self.writer,
                prepared.messages,
                prepared.facts,
                fallback=lambda _facts: prepared.fallback,
                question=fact_texts(
                    prepared.facts
                ),  # never the user's question: its numbers may be an attack
                max_new_tokens=self.max_new_tokens,
                retries=self.retries,
                max_sentences=self.max_sentences,
                numbers=self._numbers(prepared),
            )
            text = result.text
            guard.update(
                numbers_rejected=list(result.numbers_rejected),
                fallback_used=result.fallback_used,
                attempts=result.attempts,
            )
            if not result.fallback_used and not self.grounded(text, prepared):
                text, guard["fallback_used"], guard["ungrounded"] = prepared.fallback, True, True
        text, completed = self._complete(text, prepared)
        guard["completed_facts"] = completed
        guard["numbers_checked"] = check_numbers(
            text, prepared.facts, fact_texts(prepared.facts)
        ).numbers_checked
        return self._finish(prepared, text, guard, started, session_id)

    def stream(self, question: str, session_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Token events as the model writes, then one answer event (the guarded final answer).

        When the guard rejects the streamed text, the final event's answer replaces it and says so
        (`"replaced_stream": true`); clients show the final answer's text.
        """
        started = time.perf_counter()
        prepared = self.prepare(question, session_id)
        guard: dict[str, Any] = {"numbers_checked": 0, "numbers_rejected": [], "fallback_used": False}
        replaced = False
        if prepared.direct is not None:
            text = prepared.direct
            yield {"type": "token", "text": text}
        else:
            numbers = self._numbers(prepared)
            with self.writer.stream(
                prepared.messages, self.max_new_tokens, self.max_sentences, numbers=numbers
            ) as chunks:
                for chunk in chunks:
                    yield {"type": "token", "text": chunk}
                text = chunks.reply
                first = chunks.stats.first_token_seconds
            check = check_numbers(text, prepared.facts, fact_texts(prepared.facts))
            leaked = leaks_prompt(text, PROMPT_SECRETS)
            guard["first_token_ms"] = round(first * 1000, 1) if first is not None else None
            if check.numbers_rejected or leaked or not text or not self.grounded(text, prepared):
                replaced = True
                guard.update(
                    numbers_rejected=list(check.numbers_rejected), fallback_used=True, prompt_leak=leaked
                )
                text = prepared.fallback
        text, completed = self._complete(text, prepared)
        guard["completed_facts"] = completed
        guard["numbers_checked"] = check_numbers(
            text, prepared.facts, fact_texts(prepared.facts)
        ).numbers_checked
        answer = self._finish(prepared, text, guard, started, session_id)
        answer["replaced_stream"] = replaced
        yield {"type": "answer", "answer": answer}

    def _numbers(self, prepared: Prepared) -> NumberForms | None:
        return number_forms(prepared.facts, prepared.messages) if self.copy_numbers else None

    @staticmethod
    def grounded(text: str, prepared: Prepared) -> bool:
        """Whether model text states at least one headline fact (else it talks around the question: the
        small model may echo the question or contradict a status, which no number check can see)."""
        by = {f.name: f for f in prepared.facts}
        headline = [by[n] for n in prepared.headline if n in by]
        return not headline or any(states_fact(text, f) for f in headline)

    def _complete(self, text: str, prepared: Prepared) -> tuple[str, list[str]]:
        """Append the headline facts the text does not state ("Figures: name: value; ...")."""
        by = {f.name: f for f in prepared.facts}
        missing = [by[n] for n in prepared.headline if n in by and not states_fact(text, by[n])]
        if not missing:
            return text, []
        from llm.facts import format_fact

        extra = "Figures: " + "; ".join(format_fact(f) for f in missing) + "."
        return f"{text.rstrip()} {extra}".strip(), [f.name for f in missing]

    def _finish(
        self, prepared: Prepared, text: str, guard: dict[str, Any], started: float, session_id: str | None
    ) -> dict[str, Any]:
        session_id = session_id or new_session_id()
        entities = prepared.entities.to_dict()
        self.sessions.append(session_id, prepared.question, text, prepared.intent, entities, prepared.run_id)
        return answer_object(prepared, text, guard, session_id, (time.perf_counter() - started) * 1000)


def answer_object(
    prepared: Prepared, text: str, guard: dict[str, Any], session_id: str, latency_ms: float
) -> dict[str, Any]:
    """The answer contract: answer, intent, entities, facts, sources, guard, session_id, latency_ms."""
    return {
        "answer": text,
        "intent": prepared.intent,
        "entities": prepared.entities.to_dict(),
        "facts": [f.to_dict() for f in prepared.facts],
        "sources": list(prepared.sources),
        "guard": guard,
        "session_id": session_id,
        "latency_ms": round(latency_ms, 1),
        "run_id": prepared.run_id,
        "follow_up": prepared.follow_up,
    }


def _inherit(new: Entities, old: Entities) -> Entities:
    """A follow-up's entities: the previous turn's SKUs, stores, suppliers; the new period and scenario."""
    old.period = new.period or old.period
    old.scenario = new.scenario if new.scenario else old.scenario
    return old


def default_retriever() -> Any:
    """The knowledge-base retriever over the saved index, or None when `stockpilot index` was not run."""
    from rag.knowledge import get_retriever

    try:
        return get_retriever(k=CONTEXT_K)
    except InputError:
        return None
