"""LoRA fine-tuning of the answer writer on the instruction set (`training_data/instructions_*.jsonl`).

Each example becomes the exact chat the assistant sends at run time (system turn = `instruction`, user turn
= `input`, both as `llm.generate.LocalWriter.encode` renders them with the chat template), followed by the
reference answer and the end-of-turn token. Only the answer tokens carry loss: the prompt tokens are
labelled -100. Training is seeded, uses `threads` torch threads, logs the validation loss on a fixed slice
every `eval_every` steps in a Rich progress bar, and saves the adapter with peft's `save_pretrained` plus
`training_metadata.json` (data hash, base model, steps, metrics, command).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecasting.errors import InputError
from forecasting.io import atomic_write_text

if TYPE_CHECKING:
    import torch

    from llm.model import LoadedModel

METADATA_NAME = "training_metadata.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
IGNORE_INDEX = -100


@dataclass
class LoraTrainingConfig:
    """Hyper-parameters of one LoRA run (peft-style: plain fields, `to_dict`, saved with the adapter)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    top_layers: int | None = None
    steps: int = 300
    batch_size: int = 4
    lr: float = 6e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    max_length: int = 768
    eval_every: int = 50
    eval_examples: int = 32
    threads: int | None = None

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        checks = {
            "rank": self.rank >= 1,
            "alpha": self.alpha > 0,
            "dropout": 0 <= self.dropout < 1,
            "target_modules": bool(self.target_modules),
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "max_length": self.max_length >= 32,
            "eval_every": self.eval_every >= 1,
            "top_layers": self.top_layers is None or self.top_layers >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"LoRA training: invalid {bad[0]} ({getattr(self, bad[0])!r})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (a clear error when it is missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (build it with `python -m training_data.build_instructions`)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return records


def file_hash(paths: Iterable[str | Path]) -> str:
    """SHA-256 over the files' bytes (in the order given): identifies the data an adapter was trained on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def record_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat an instruction record stands for: the system rules, then the facts/documents/question turn."""
    return [
        {"role": "system", "content": str(record["instruction"])},
        {"role": "user", "content": str(record["input"])},
    ]


def prompt_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of the prompt exactly as `LocalWriter.encode` builds it at run time."""
    from llm.generate import encode_chat

    return encode_chat(tokenizer, messages)["input_ids"][0].tolist()


def encode_example(tokenizer: Any, record: Mapping[str, Any], max_length: int) -> dict[str, list[int]] | None:
    """`input_ids` and `labels` (prompt masked with -100); None when the prompt leaves no room for the answer.

    An over-long answer is cut at `max_length`; an over-long prompt is not cut (that would change what the
    model sees at run time), the example is skipped instead.
    """
    prompt = prompt_ids(tokenizer, record_messages(record))
    answer = tokenizer(str(record["output"]).strip(), add_special_tokens=False)["input_ids"]
    answer = answer + [tokenizer.eos_token_id]
    if len(prompt) + 8 > max_length:
        return None
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
    return {"input_ids": ids, "labels": labels}


def collate(batch: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded tensors (answers end together at the right edge), attention mask and position ids.

    Positions restart at 0 after the padding, so every example sees the positions it has at run time.
    """
    import torch

    width = max(len(item["input_ids"]) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        ids[row, width - n :] = torch.tensor(item["input_ids"])
        labels[row, width - n :] = torch.tensor(item["labels"])
        mask[row, width - n :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": positions}


def response_loss(model: Any, batch: Mapping[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the answer tokens only.

    The language-model head runs only on the last positions that hold answer tokens (`logits_to_keep`):
    with left padding that is the answer span of the longest answer, a fraction of the prompt length.
    """
    import torch

    labels = batch["labels"]
    answer = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    keep = labels.shape[1] - int(answer.min()) + 1 if len(answer) else 2
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
    ).logits
    targets = labels[:, -keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def mean_response_loss(
    model: Any, encoded: Sequence[Mapping[str, list[int]]], pad_id: int, batch_size: int = 4
) -> float:
    """Token-weighted mean cross-entropy over the answer tokens (exp of it is the perplexity)."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start : start + batch_size], pad_id)
            total += float(response_loss(model, batch, reduction="sum"))
            count += int((batch["labels"] != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    return total / max(count, 1)


@dataclass
class LoraTrainer:
    """Fits a LoRA adapter on instruction records; `fit` returns self, fitted state ends in `_`."""

    config: LoraTrainingConfig = field(default_factory=LoraTrainingConfig)
    models_path: Path | None = None
    progress: bool = True

    def _load_base(self) -> LoadedModel:
        from llm.config import get_llm_settings
        from llm.model import load_base

        settings = get_llm_settings()
        return load_base(settings.backend(), self.models_path or settings.models_path)

    def fit(
        self,
        train: Sequence[Mapping[str, Any]],
        validation: Sequence[Mapping[str, Any]] = (),
        base: LoadedModel | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> LoraTrainer:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        previous_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            random.seed(cfg.seed)
            torch.manual_seed(cfg.seed)
            base = base or self._load_base()
            dtypes = {p.dtype for p in base.model.parameters()}
            if dtypes != {torch.float32}:
                raise InputError(
                    f"LoRA training needs float32 weights, the base model has {sorted(map(str, dtypes))}: "
                    "load it with load_model(..., dtype='float32')"
                )
            tokenizer = base.tokenizer
            encoded = [e for e in (encode_example(tokenizer, r, cfg.max_length) for r in train) if e]
            if not encoded:
                raise InputError("LoRA training: no training example fits in max_length")
            val_records = list(validation)[: cfg.eval_examples]
            val_encoded = [
                e for e in (encode_example(tokenizer, r, cfg.max_length) for r in val_records) if e
            ]
            lora = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                layers_to_transform=_top_layers(base.model, cfg.top_layers),
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(base.model, lora)
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            scheduler = get_linear_schedule_with_warmup(
                optimizer, min(cfg.warmup_steps, cfg.steps // 5), cfg.steps
            )
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            rng = random.Random(cfg.seed)
            order: list[int] = []
            self.history_: list[dict[str, float]] = []
            self.skipped_examples_ = len(train) - len(encoded)
            started = time.perf_counter()
            val_loss = mean_response_loss(model, val_encoded, pad_id) if val_encoded else None
            self.initial_val_loss_ = val_loss
            with _progress(self.progress) as bar:
                task = bar.add_task("LoRA", total=cfg.steps, loss=float("nan"), val=val_loss or float("nan"))
                for step in range(1, cfg.steps + 1):
                    if len(order) < cfg.batch_size:
                        fresh = list(range(len(encoded)))
                        rng.shuffle(fresh)
                        order.extend(fresh)
                    batch = collate([encoded[i] for i in order[: cfg.batch_size]], pad_id)
                    del order[: cfg.batch_size]
                    loss = response_loss(model, batch)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    record: dict[str, float] = {"step": step, "loss": float(loss.detach())}
                    if val_encoded and (step % cfg.eval_every == 0 or step == cfg.steps):
                        val_loss = mean_response_loss(model, val_encoded, pad_id)
                        record["val_loss"] = val_loss
                    record["seconds"] = time.perf_counter() - started
                    self.history_.append(record)
                    if on_step is not None:
                        on_step(step, record["loss"])
                    bar.update(task, advance=1, loss=record["loss"], val=val_loss or float("nan"))
            model.eval()
            self.model_ = model
            self.tokenizer_ = tokenizer
            self.base_ = base
            self.seconds_ = time.perf_counter() - started
            self.train_examples_ = len(encoded)
            self.val_loss_ = val_loss
        finally:
            torch.set_num_threads(previous_threads)
        return self

    @property
    def metrics_(self) -> dict[str, Any]:
        """Training figures stored with the adapter."""
        losses = [h["loss"] for h in self.history_]
        tail = losses[-min(20, len(losses)) :]
        return {
            "first_loss": round(losses[0], 4),
            "final_loss_mean_last_20": round(sum(tail) / len(tail), 4),
            "initial_val_loss": _round(self.initial_val_loss_),
            "final_val_loss": _round(self.val_loss_),
            "final_val_perplexity": _round(math.exp(self.val_loss_) if self.val_loss_ is not None else None),
            "train_examples": self.train_examples_,
            "skipped_examples": self.skipped_examples_,
            "seconds": round(self.seconds_, 1),
            "seconds_per_step": round(self.seconds_ / max(len(losses), 1), 3),
        }

    def save_pretrained(self, folder: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Save the adapter (peft `save_pretrained`) and `training_metadata.json` next to it."""
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save_pretrained(folder)
        meta = {
            "base_model": self.base_.source,
            "base_checkpoint": self.base_.checkpoint.name,
            "config": self.config.to_dict(),
            "steps": self.config.steps,
            "metrics": self.metrics_,
            "history": [{k: round(v, 4) for k, v in h.items()} for h in self.history_],
            "torch": torch.__version__,
            "torch_threads": self.config.threads or torch.get_num_threads(),
            "command": " ".join(["stockpilot", *sys.argv[1:]]) if sys.argv else "",
        }
        meta.update(metadata or {})
        atomic_write_text(folder / METADATA_NAME, json.dumps(meta, indent=2, default=str))
        return folder


def _top_layers(model: Any, top: int | None) -> list[int] | None:
    """Indices of the last `top` transformer layers (None: all layers).

    Adapting only the top layers makes a step much cheaper on a CPU: nothing below the lowest adapted layer
    needs gradients, so the backward pass stops there.
    """
    if not top:
        return None
    n = int(model.config.num_hidden_layers)
    return list(range(max(n - top, 0), n))


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]:.3f}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def train_lora(
    data_dir: str | Path,
    output_dir: str | Path,
    config: LoraTrainingConfig | None = None,
    limit: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> LoraTrainer:
    """Train on `<data_dir>/instructions_train.jsonl` (validation loss on `instructions_validation.jsonl`),
    save the adapter with its metadata under `output_dir`, and return the fitted trainer."""
    data_dir = Path(data_dir)
    paths = [data_dir / f"instructions_{split}.jsonl" for split in ("train", "validation")]
    train, validation = (read_jsonl(p) for p in paths)
    if limit:
        train = train[:limit]
    trainer = LoraTrainer(config or LoraTrainingConfig(), progress=progress).fit(train, validation)
    metadata = {"data_hash": file_hash(paths), "data_files": [p.name for p in paths]}
    if command:
        metadata["command"] = command
    trainer.save_pretrained(output_dir, metadata)
    return trainer
