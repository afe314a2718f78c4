"""`stockpilot train-llm` (LoRA fine-tuning of the answer writer) and `stockpilot eval-llm` (base vs LoRA vs
template on the test split, with a Markdown + HTML report)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from api.cli_common import JsonOpt, console, guarded, out_console, print_json
from forecasting.errors import InputError

DATA_DIR = Path(__file__).resolve().parents[1] / "training_data"


def register(app: typer.Typer) -> None:
    app.command("train-llm")(train_llm)
    app.command("eval-llm")(eval_llm)


def _command() -> str:
    return "stockpilot " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@guarded
def train_llm(
    rank: int = typer.Option(8, "--rank", help="LoRA rank r."),
    alpha: int = typer.Option(16, "--alpha", help="LoRA alpha (scale = alpha / r)."),
    dropout: float = typer.Option(0.05, "--dropout", help="LoRA dropout."),
    target_modules: str = typer.Option(
        "q_proj,k_proj,v_proj,o_proj", "--target-modules", help="Comma-separated module names to adapt."
    ),
    top_layers: int = typer.Option(
        None, "--top-layers", help="Adapt only the last N layers (a cheaper backward pass on a CPU)."
    ),
    steps: int = typer.Option(300, "--steps", help="Optimiser steps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Examples per step."),
    lr: float = typer.Option(6e-4, "--lr", help="Peak learning rate (linear warm-up and decay)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (data order, LoRA init, dropout)."),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per example (longer prompts skipped)."),
    eval_every: int = typer.Option(50, "--eval-every", help="Validation loss every N steps."),
    eval_examples: int = typer.Option(32, "--eval-examples", help="Validation examples for the loss."),
    threads: int = typer.Option(None, "--threads", help="Torch threads (default: torch's own)."),
    data_dir: Path = typer.Option(
        DATA_DIR, "--data-dir", help="Folder with instructions_{train,validation}.jsonl."
    ),
    output_dir: Path = typer.Option(
        None, "--output-dir", help="Adapter folder (default: <home>/models/adapter, loaded by the assistant)."
    ),
    limit: int = typer.Option(None, "--limit", help="Use only the first N training examples."),
    as_json: bool = JsonOpt,
) -> None:
    """Fine-tune the bundled model with LoRA on the instruction set; save the adapter and its metadata."""
    from llm.config import get_llm_settings
    from llm.train import LoraTrainingConfig, train_lora

    modules = tuple(m.strip() for m in target_modules.split(",") if m.strip())
    config = LoraTrainingConfig(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=modules, top_layers=top_layers, steps=steps,
        batch_size=batch_size,
        lr=lr, seed=seed, max_length=max_length, eval_every=eval_every, eval_examples=eval_examples,
        threads=threads,
    )  # fmt: skip
    output = output_dir or get_llm_settings().models_path / "adapter"
    trainer = train_lora(data_dir, output, config, limit=limit, progress=not as_json, command=_command())
    summary = {"adapter": str(output), "config": config.to_dict(), "metrics": trainer.metrics_}
    if as_json:
        print_json(summary)
        return
    m = trainer.metrics_
    out_console.print(
        f"[bold]LoRA[/] saved to {output}: {steps} steps in {m['seconds']} s "
        f"({m['seconds_per_step']} s/step); "
        f"loss {m['first_loss']} -> {m['final_loss_mean_last_20']}; validation loss "
        f"{m['initial_val_loss']} -> {m['final_val_loss']}"
    )


@guarded
def eval_llm(
    limit: int = typer.Option(None, "--limit", help="Evaluate N test examples (spread over intents)."),
    systems: str = typer.Option(
        "base,lora,template", "--systems", help="Comma-separated: base, lora, template."
    ),
    adapter: Path = typer.Option(
        None, "--adapter", help="Adapter folder (default: the one the assistant loads)."
    ),
    data: Path = typer.Option(DATA_DIR / "instructions_test.jsonl", "--data", help="Test split (JSONL)."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", help="Token limit per answer."),
    threads: int = typer.Option(None, "--threads", help="Torch threads while generating."),
    output_dir: Path = typer.Option(
        None, "--output-dir", help="Report folder (default: <home>/reports/llm_eval)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Compare base model, LoRA model and template fallback on the test split (raw and after the guard)."""
    from rich.table import Table

    from forecasting.settings import get_settings
    from llm.evaluate_llm import evaluate, load_test_records, table_rows, targets, write_reports

    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise InputError(f"--adapter: {adapter} has no adapter_config.json")
    names = [s.strip() for s in systems.split(",") if s.strip()]
    records = load_test_records(data, limit)
    with console.status("evaluating") as status:
        result = evaluate(
            records, names, adapter=adapter, max_new_tokens=max_new_tokens, threads=threads,
            progress=lambda message: status.update(message),
        )  # fmt: skip
    folder = output_dir or get_settings().home / "reports" / "llm_eval"
    paths = write_reports(result, folder, _command())
    if as_json:
        print_json(result.to_json())
        return
    table = Table(title=f"LLM evaluation, {len(records)} test examples (raw / guarded)")
    table.add_column("metric")
    for name in result.metrics:
        table.add_column(name, justify="right")
    for row in table_rows(result):
        table.add_row(*row)
    out_console.print(table)
    for name, ok in targets(result):
        out_console.print(f"{'met' if ok else 'missed'}: {name}")
    out_console.print(f"report: {paths['markdown']} and {paths['html']}")
