"""Text generation behind one interface: a local Hugging Face model or an OpenAI-compatible chat endpoint.

`Writer.generate(messages)` returns the whole answer (less an unfinished last sentence when the token limit
cut it off); `Writer.stream(messages)` yields it in chunks. `max_sentences` ends a reply after that many
sentences: local generation stops there instead of spending tokens the caller would drop. `numbers` (a
`llm.copying.NumberForms`) restricts the numbers a local model may write to copies of the facts; remote
models ignore it (the guard still checks them). Local generation
is greedy (deterministic for a given prompt and thread count) and serialised by a lock, since two
generations at once on a small CPU only slow each other down. It uses `threads` torch threads while it runs
(see `LLMSettings.generation_threads`) and restores the previous count afterwards.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llm.config import Backend, LLMSettings, get_llm_settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llm.copying import NumberForms
    from llm.model import LoadedModel

Message = dict[str, str]


@dataclass
class GenerationStats:
    """How one generation went: token counts, wall time, speed, time to the first streamed text, and
    whether the token limit cut the reply off (`truncated`, OpenAI's finish reason "length")."""

    prompt_tokens: int | None = None
    new_tokens: int | None = None
    seconds: float = 0.0
    first_token_seconds: float | None = None
    truncated: bool = False

    @property
    def tokens_per_second(self) -> float | None:
        if not self.new_tokens or self.seconds <= 0:
            return None
        return self.new_tokens / self.seconds

    def to_dict(self) -> dict[str, Any]:
        tps = self.tokens_per_second
        return {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(tps, 2) if tps else None,
            "first_token_seconds": (
                round(self.first_token_seconds, 3) if self.first_token_seconds is not None else None
            ),
            "truncated": self.truncated,
        }


@dataclass
class Generation:
    """Generated text with its statistics (and the sentence limit it was written under)."""

    text: str
    stats: GenerationStats
    max_sentences: int | None = None

    @property
    def reply(self) -> str:
        """The text to use: stripped, without an unfinished last sentence when the token limit cut it off,
        and at most `max_sentences` sentences."""
        text = drop_unfinished_sentence(self.text) if self.stats.truncated else self.text.strip()
        return first_sentences(text, self.max_sentences)


# A sentence end followed by a space: at the very end of a cut-off text, "12." may be the start of "12.5".
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def drop_unfinished_sentence(text: str) -> str:
    """`text` up to its last complete sentence ("" when there is none): a reply cut off by the token limit
    must not end in half a sentence or half a number. A decimal point is not a sentence end, and neither is
    a full stop at the very end (the cut may have fallen inside a number)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else ""


def sentence_end(text: str, n: int | None) -> int | None:
    """Where the `n`-th complete sentence of `text` ends (a full stop followed by a space), else None."""
    if not n:
        return None
    for i, match in enumerate(_SENTENCE_END.finditer(text), start=1):
        if i == n:
            return match.end()
    return None


def first_sentences(text: str, n: int | None) -> str:
    """`text` cut after its `n`-th complete sentence (unchanged when it has fewer, or `n` is None)."""
    end = sentence_end(text, n)
    return text if end is None else text[:end].strip()


class TextStream:
    """An iterator of text chunks; `.text` and `.stats` are complete once it is exhausted.

    `close()` (or leaving a `with` block) stops a local generation early, e.g. when a client disconnects.
    With `max_sentences`, the chunks end with that sentence and the generation is stopped there.
    """

    def __init__(
        self,
        chunks: Iterator[str],
        stats: GenerationStats,
        on_close: Any = None,
        max_sentences: int | None = None,
    ) -> None:
        self._chunks = chunks
        self.stats = stats
        self._parts: list[str] = []
        self._on_close = on_close
        self.max_sentences = max_sentences
        self.done = False

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        for chunk in () if self.done else self._chunks:
            if not chunk:
                continue
            so_far = self.text
            end = sentence_end(so_far + chunk, self.max_sentences)
            if end is not None:  # the limit is reached inside this chunk: keep its part, stop
                chunk = chunk[: max(end - len(so_far), 0)].rstrip()
                self.close()
                self.done = True
                if not chunk:
                    break
            self._parts.append(chunk)
            return chunk
        self.done = True
        raise StopIteration

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def reply(self) -> str:
        """The streamed text as `Generation.reply` gives it (no unfinished last sentence)."""
        return Generation(self.text, self.stats, self.max_sentences).reply

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writer(ABC):
    """Writes an assistant reply for a list of chat messages (`{"role": ..., "content": ...}`)."""

    name: str = "writer"
    max_new_tokens: int = 160

    @abstractmethod
    def complete(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> Generation:
        """The whole reply with statistics."""

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> TextStream:
        """The reply as text chunks, as they are produced."""

    def generate(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> str:
        """The reply as text (greedy, so the same prompt gives the same text; see `Generation.reply`)."""
        return self.complete(messages, max_new_tokens, max_sentences, numbers=numbers).reply


def encode_chat(tokenizer: Any, messages: Sequence[Message]) -> dict[str, Any]:
    """Prompt tensors from the chat template; control tokens inside messages are encoded as plain text.

    The one place prompts are tokenised, so LoRA training (`llm.train`) sees exactly the run-time prompt.
    """
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if tokenizer.chat_template:
        return dict(
            tokenizer.apply_chat_template(
                msgs,
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
                sanitize_control_tokens=True,
            )
        )
    # A base model without a chat template: a plain transcript ending with the assistant's turn.
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs) + "Assistant:"
    return dict(tokenizer(text, return_tensors="pt"))


class LocalWriter(Writer):
    """Greedy generation with a local transformers model, using the tokenizer's chat template.

    The system turn is the same for every question, so its keys and values are computed once (per system
    text, a few kept) and every generation starts from a copy of them: prefill covers only the user turn.
    The prefix is used only when its token ids are exactly the start of the prompt's ids.
    `copy_margin`: see `llm.copying.NumberCopyProcessor` (None: its default).
    """

    PREFIXES_KEPT = 4

    def __init__(
        self,
        loaded: LoadedModel,
        max_new_tokens: int = 160,
        threads: int | None = None,
        repetition_penalty: float | None = None,
        copy_margin: float | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.name = loaded.source + (f"+{loaded.adapter.name}" if loaded.adapter else "")
        self.max_new_tokens = max_new_tokens
        self.threads = threads
        self.repetition_penalty = repetition_penalty
        self.copy_margin = copy_margin
        self._lock = threading.Lock()
        self._prefixes: dict[str, tuple[list[int], Any]] = {}

    @contextmanager
    def torch_threads(self) -> Iterator[None]:
        """Use `self.threads` torch threads for the duration (process-wide in torch), then restore."""
        import torch

        previous = torch.get_num_threads()
        if self.threads and self.threads != previous:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def encode(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Prompt tensors from the chat template (see `encode_chat`)."""
        return encode_chat(self.tokenizer, messages)

    def _system_prefix(self, messages: Sequence[Message], input_ids: Any) -> Any:
        """A copy of the cached keys/values of the system turn when the prompt starts with it, else None.

        Call with the lock held and torch threads set (it may run the model on the system turn)."""
        import torch

        if not messages or messages[0]["role"] != "system" or not self.tokenizer.chat_template:
            return None
        content = messages[0]["content"]
        if content not in self._prefixes:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": content}], tokenize=True, return_dict=True
            )["input_ids"]
            ids = list(ids[0] if ids and isinstance(ids[0], list) else ids)
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            if len(self._prefixes) >= self.PREFIXES_KEPT:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[content] = (ids, out.past_key_values)
        ids, cache = self._prefixes[content]
        if len(ids) >= input_ids.shape[1] or input_ids[0, : len(ids)].tolist() != ids:
            return None
        return copy.deepcopy(cache)

    def warm_up(self, system_prompt: str) -> None:
        """One token for a prompt with `system_prompt`: caches the system turn and readies the kernels."""
        self.complete([{"role": "system", "content": system_prompt}, {"role": "user", "content": "Hi"}], 1)

    def _generate_kwargs(
        self,
        inputs: dict[str, Any],
        max_new_tokens: int | None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> dict[str, Any]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from llm.copying import copy_constraint

        kwargs: dict[str, Any] = dict(
            inputs,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList(),
        )
        prompt_len = int(inputs["input_ids"].shape[1])
        kwargs["logits_processor"] = LogitsProcessorList(
            copy_constraint(self.tokenizer, numbers, prompt_len, self.copy_margin)
        )
        if max_sentences:
            kwargs["stopping_criteria"].append(_SentenceLimit(self.tokenizer, prompt_len, max_sentences))
        if self.repetition_penalty:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs

    def complete(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> Generation:
        import torch

        inputs = self.encode(messages)
        prompt_len = int(inputs["input_ids"].shape[1])
        with self._lock, self.torch_threads(), torch.inference_mode():
            started = time.perf_counter()
            kwargs = self._generate_kwargs(inputs, max_new_tokens, max_sentences, numbers)
            kwargs["past_key_values"] = self._system_prefix(messages, inputs["input_ids"])
            output = self.model.generate(**kwargs)
            seconds = time.perf_counter() - started
        new_ids = output[0, prompt_len:]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        new_tokens = int(new_ids.shape[0])
        truncated = self._cut_off(new_tokens, int(new_ids[-1]) if new_tokens else None, max_new_tokens)
        stats = GenerationStats(
            prompt_tokens=prompt_len, new_tokens=new_tokens, seconds=seconds, truncated=truncated
        )
        return Generation(text=text, stats=stats, max_sentences=max_sentences)

    def _cut_off(self, new_tokens: int, last_id: int | None, max_new_tokens: int | None) -> bool:
        """Whether generation stopped at the token limit rather than at an end-of-sequence token."""
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        return new_tokens >= (max_new_tokens or self.max_new_tokens) and last_id not in eos_ids

    def stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> TextStream:
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer

        inputs = self.encode(messages)
        stats = GenerationStats(prompt_tokens=int(inputs["input_ids"].shape[1]), new_tokens=0)
        cancel = threading.Event()
        errors: list[BaseException] = []
        last_id: list[int] = []
        started = time.perf_counter()

        class _Streamer(TextIteratorStreamer):
            def put(self, value: Any) -> None:
                if not self.next_tokens_are_prompt:
                    if stats.first_token_seconds is None:
                        stats.first_token_seconds = time.perf_counter() - started
                    stats.new_tokens = (stats.new_tokens or 0) + int(value.numel())
                    last_id[:] = [int(value.reshape(-1)[-1])]
                super().put(value)

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(inputs, max_new_tokens, max_sentences, numbers)
        kwargs["streamer"] = streamer
        kwargs["stopping_criteria"].append(_Cancel())

        def run() -> None:
            nonlocal started
            try:
                with self._lock, self.torch_threads(), torch.inference_mode():
                    started = time.perf_counter()
                    kwargs["past_key_values"] = self._system_prefix(messages, inputs["input_ids"])
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the reader below
                errors.append(exc)
                streamer.end()
            finally:
                stats.seconds = time.perf_counter() - started
                stats.truncated = not cancel.is_set() and self._cut_off(
                    stats.new_tokens or 0, last_id[0] if last_id else None, max_new_tokens
                )

        thread = threading.Thread(target=run, name="stockpilot-generate", daemon=True)
        thread.start()

        def chunks() -> Iterator[str]:
            yield from streamer
            thread.join()
            if errors:
                raise errors[0]

        def stop() -> None:
            """Cancel at the next decoding step and wait for it: no generation outlives its stream."""
            cancel.set()
            thread.join(timeout=60)

        return TextStream(chunks(), stats, on_close=stop, max_sentences=max_sentences)


class _SentenceLimit:
    """A stopping criterion: the new text holds `n` complete sentences (see `sentence_end`)."""

    def __init__(self, tokenizer: Any, prompt_len: int, n: int) -> None:
        self.tokenizer, self.prompt_len, self.n = tokenizer, prompt_len, n

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        text = self.tokenizer.decode(input_ids[0, self.prompt_len :], skip_special_tokens=True)
        done = sentence_end(text, self.n) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


class ChatModelWriter(Writer):
    """The same interface over a LangChain chat model (e.g. `ChatOpenAI` for vLLM, Ollama, OpenAI)."""

    def __init__(
        self, chat_model: BaseChatModel, name: str = "chat-model", max_new_tokens: int = 160
    ) -> None:
        self.chat_model = chat_model
        self.name = name
        self.max_new_tokens = max_new_tokens

    @staticmethod
    def to_langchain(messages: Sequence[Message]) -> list[Any]:
        from langchain_core.messages import convert_to_messages

        return convert_to_messages([{"role": m["role"], "content": m["content"]} for m in messages])

    def _model(self, max_new_tokens: int | None) -> Any:
        limit = max_new_tokens or self.max_new_tokens
        fields = getattr(type(self.chat_model), "model_fields", {})
        if "max_tokens" in fields:
            return self.chat_model.bind(max_tokens=limit)
        return self.chat_model

    def complete(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> Generation:
        started = time.perf_counter()
        reply = self._model(max_new_tokens).invoke(self.to_langchain(messages))
        stats = GenerationStats(seconds=time.perf_counter() - started)
        usage = getattr(reply, "usage_metadata", None) or {}
        stats.prompt_tokens = usage.get("input_tokens")
        stats.new_tokens = usage.get("output_tokens")
        stats.truncated = _finish_reason(reply) == "length"
        return Generation(text=_content_text(reply.content), stats=stats, max_sentences=max_sentences)

    def stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int | None = None,
        max_sentences: int | None = None,
        numbers: NumberForms | None = None,
    ) -> TextStream:
        stats = GenerationStats()
        model = self._model(max_new_tokens)
        lc_messages = self.to_langchain(messages)

        def chunks() -> Iterator[str]:
            started = time.perf_counter()
            try:
                for chunk in model.stream(lc_messages):
                    usage = getattr(chunk, "usage_metadata", None)
                    if usage:
                        stats.prompt_tokens = usage.get("input_tokens")
                        stats.new_tokens = usage.get("output_tokens")
                    if _finish_reason(chunk) == "length":
                        stats.truncated = True
                    text = _content_text(chunk.content)
                    if text and stats.first_token_seconds is None:
                        stats.first_token_seconds = time.perf_counter() - started
                    yield text
            finally:
                stats.seconds = time.perf_counter() - started

        return TextStream(chunks(), stats, max_sentences=max_sentences)


def _finish_reason(message: Any) -> str | None:
    """The OpenAI-style finish reason ("stop", "length") LangChain keeps in a message's metadata."""
    return (getattr(message, "response_metadata", None) or {}).get("finish_reason")


def _content_text(content: Any) -> str:
    """LangChain message content (a string or a list of content blocks) as plain text."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def openai_chat_model(backend: Backend, settings: LLMSettings) -> BaseChatModel:
    """`ChatOpenAI` for an OpenAI-compatible server: temperature 0, fixed seed, bounded timeout."""
    from langchain_openai import ChatOpenAI

    api_key = settings.llm_api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return ChatOpenAI(
        model=backend.model,
        base_url=backend.base_url,
        api_key=api_key,
        temperature=0,
        seed=0,
        timeout=settings.llm_timeout,
        max_retries=1,
        max_tokens=settings.llm_max_new_tokens,
        stream_usage=True,
    )


def load_writer(settings: LLMSettings | None = None) -> Writer:
    """The writer `STOCKPILOT_LLM` asks for (local models are shared through `llm.model.get_model`)."""
    settings = settings or get_llm_settings()
    backend = settings.backend()
    if backend.kind == "openai":
        chat_model = openai_chat_model(backend, settings)
        limit = settings.llm_max_new_tokens
        return ChatModelWriter(chat_model, name=f"openai:{backend.model}", max_new_tokens=limit)
    from llm.model import get_model

    loaded = get_model(settings)
    return LocalWriter(
        loaded, max_new_tokens=settings.llm_max_new_tokens, threads=settings.generation_threads
    )


@lru_cache
def get_writer() -> Writer:
    """The process-wide writer for the current settings."""
    return load_writer()
