"""LoRA fine-tuning, the instruction data and the evaluation metrics, on the real bundled model and data.

Training runs a few steps on a tiny slice of the committed instruction set (real pipeline facts); the
bundled SmolLM2 is converted once per session (STOCKPILOT_TEST_MODEL_DIR reuses a converted checkpoint).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from api.cli import app
from forecasting.errors import InputError
from llm.config import LLMSettings
from llm.evaluate_llm import aggregate, score_answer, template_answer
from llm.facts import as_facts
from llm.generate import encode_chat
from llm.guard import check_numbers
from llm.model import LoadedModel, apply_adapter, load_model
from llm.numbers import extract_numbers
from llm.train import (
    IGNORE_INDEX,
    METADATA_NAME,
    LoraTrainer,
    LoraTrainingConfig,
    encode_example,
    read_jsonl,
    record_messages,
)
from training_data.build_instructions import INTENTS, SPLITS, split_of

DATA = Path(__file__).resolve().parents[1] / "training_data"


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {s: read_jsonl(DATA / f"instructions_{s}.jsonl") for s in SPLITS}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    reuse = os.environ.get("STOCKPILOT_TEST_MODEL_DIR")
    models = Path(reuse) if reuse else tmp_path_factory.mktemp("models")
    return load_model(LLMSettings(llm="bundled", llm_adapter="none"), models_path=models)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("1,250 units", "number", 1250.0),
        ("12.5%", "percent", 12.5),
        ("3.2k", "number", 3200.0),
        ("ROP 90", "number", 90.0),
    ],
)
def test_number_extractor_on_tricky_strings(text: str, kind: str, value: float) -> None:
    (mention,) = extract_numbers(text)
    assert (mention.kind, mention.value) == (kind, value)


def test_number_extractor_reads_a_month_day_as_a_date() -> None:
    (mention,) = extract_numbers("order by Dec 5")
    assert (mention.kind, mention.month, mention.day, mention.year) == ("date", 12, 5, None)
    assert extract_numbers("3.2k")[0].quantum == 100


# --------------------------------------------------------------------------- instruction data


def test_instruction_set_is_large_split_by_sku_and_covers_every_intent(splits: dict[str, list[dict]]) -> None:
    total = sum(len(v) for v in splits.values())
    assert total >= 3000
    keys = {s: {r["sku"] for r in records} for s, records in splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert {r["intent"] for r in splits["train"]} == set(INTENTS)
    for split, records in splits.items():
        intents = Counter(r["intent"] for r in records)
        assert len(intents) >= len(INTENTS) - 1, split  # few distinct off-topic prompts: not in every split
        assert {r["split"] for r in records} == {split}
        single = [r["sku"] for r in records if "+" not in r["sku"] and not r["sku"].startswith("weekly:")]
        assert all(split_of(sku) == split for sku in single)
    assert {r["dataset"] for r in splits["train"]} == {"demo", "m5"}


def test_references_state_only_facts_and_inputs_match_the_prompt(
    splits: dict[str, list[dict]],
) -> None:
    from llm.prompts import Snippet, build_messages

    for record in splits["test"]:
        facts = as_facts(record["facts"])
        assert check_numbers(record["output"], facts, question=record["question"]).ok, record["output"]
        if record["intent"] != "weekly_summary":  # as Assistant.prepare builds it (facts without sources)
            facts = [replace(f, source=None) for f in facts]
        snippets = [Snippet(**d) for d in record["documents"]]
        assert record_messages(record) == build_messages(record["question"], facts, snippets)
    # The retrieved context is in the inputs, as at run time (the weekly summary has its own prompt).
    answers = [r for r in splits["test"] if r["intent"] not in ("weekly_summary", "out_of_scope")]
    assert sum("<documents>" in r["input"] for r in answers) >= 0.9 * len(answers)
    # Several phrasings per intent, not one template.
    starts = Counter((r["intent"], " ".join(r["output"].split()[:2])) for r in splits["train"])
    per_intent = Counter(intent for intent, _ in starts)
    assert all(per_intent[i] >= 3 for i in INTENTS if i != "out_of_scope")  # off-topic: the one refusal


# --------------------------------------------------------------------------- training


def test_prompt_tokens_are_masked_and_match_the_run_time_prompt(
    base: LoadedModel, splits: dict[str, list[dict]]
) -> None:
    record = splits["train"][0]
    encoded = encode_example(base.tokenizer, record, 1024)
    prompt = encode_chat(base.tokenizer, record_messages(record))["input_ids"][0].tolist()
    n = len(prompt)
    assert encoded["input_ids"][:n] == prompt
    assert encoded["labels"][:n] == [IGNORE_INDEX] * n
    answer = encoded["labels"][n:]
    assert answer[-1] == base.tokenizer.eos_token_id and IGNORE_INDEX not in answer
    assert base.tokenizer.decode(answer[:-1]).strip() == record["output"].strip()
    assert encode_example(base.tokenizer, record, n) is None  # no room for the answer: skipped, not cut


def test_a_few_steps_lower_the_loss_and_the_adapter_round_trips(
    base: LoadedModel, splits: dict[str, list[dict]], tmp_path: Path
) -> None:
    fresh = load_model(LLMSettings(llm=str(base.checkpoint), llm_adapter="none"), dtype="float32")
    config = LoraTrainingConfig(
        rank=4, alpha=8, dropout=0.0, steps=5, batch_size=2, lr=3e-3, seed=1, eval_every=5, eval_examples=2,
        threads=1,
    )  # fmt: skip
    slice_ = splits["train"][:2]
    trainer = LoraTrainer(config, progress=False).fit(slice_, splits["validation"], base=fresh)
    losses = [h["loss"] for h in trainer.history_]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert trainer.val_loss_ is not None and trainer.initial_val_loss_ is not None
    folder = trainer.save_pretrained(tmp_path / "adapter", {"data_hash": "abc"})
    meta = json.loads((folder / METADATA_NAME).read_text())
    assert meta["steps"] == 5 and meta["data_hash"] == "abc" and meta["config"]["rank"] == 4
    assert meta["base_model"] == str(base.checkpoint) and meta["metrics"]["train_examples"] == 2
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()

    batch = encode_chat(base.tokenizer, record_messages(splits["test"][0]))
    with torch.inference_mode():
        trained = trainer.model_(**batch).logits
        again = load_model(LLMSettings(llm=str(base.checkpoint), llm_adapter="none"), dtype="float32")
        reloaded = apply_adapter(again.model, folder, merge=False).eval()
        assert torch.equal(reloaded(**batch).logits, trained)
        settings = LLMSettings(llm=str(base.checkpoint), llm_adapter=str(folder))
        merged = load_model(settings, dtype="float32")
        assert torch.allclose(merged.model(**batch).logits, trained, atol=1e-4)
        half = load_model(settings, dtype="bfloat16")  # merged in float32, then cast
        assert half.info["dtype"] == "bfloat16" and half.model.dtype == torch.bfloat16
        agree = half.model(**batch).logits.argmax(-1) == trained.argmax(-1)
        assert agree.float().mean() > 0.9  # the same next token almost everywhere
        mixed = load_model(settings, dtype="mixed")  # merged in float32, then the linear weights rounded
        agree = mixed.model(**batch).logits.argmax(-1) == trained.argmax(-1)
        assert agree.float().mean() > 0.95
        fast = load_model(settings, dtype="mixed-float16")
        plain = load_model(LLMSettings(llm=str(base.checkpoint), llm_adapter="none"), dtype="float32")
        plain = plain.model(**batch).logits
    assert not torch.allclose(plain, trained, atol=1e-4)
    for rounded in (half, mixed, fast):
        with pytest.raises(InputError, match="float32"):
            LoraTrainer(config, progress=False).fit(slice_, base=rounded)


def test_training_config_rejects_bad_values() -> None:
    from forecasting.errors import InputError

    with pytest.raises(InputError, match="rank"):
        LoraTrainingConfig(rank=0)
    with pytest.raises(InputError, match="dropout"):
        LoraTrainingConfig(dropout=1.5)


# --------------------------------------------------------------------------- evaluation metrics


def test_metrics_reward_copied_numbers_and_catch_invented_ones(splits: dict[str, list[dict]]) -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    record = next(r for r in splits["test"] if r["intent"] == "order_advice")
    facts = as_facts(record["facts"])
    exact = score_answer(record["output"], record["output"], facts, record["question"], scorer)
    assert exact.rouge["rougeL"] == pytest.approx(1.0) and not exact.hallucinated
    assert exact.reference_numbers == exact.reference_numbers_stated > 0 and exact.fact_recall == 1.0
    invented = score_answer("Order 987654 units now.", record["output"], facts, record["question"], scorer)
    assert invented.hallucinated and invented.numbers_matched == 0 and invented.rouge["rougeL"] < 0.5
    template = score_answer(template_answer(record), record["output"], facts, record["question"], scorer)
    assert not template.hallucinated
    summary = aggregate([exact, invented], fallbacks=[False, True])
    assert summary["hallucination_rate"] == 0.5 and summary["fallback_rate"] == 0.5
    assert summary["number_precision"] == pytest.approx(exact.numbers / (exact.numbers + 1), abs=1e-4)


def test_cli_rejects_bad_options_with_exit_code_2() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train-llm", "--rank", "0"])
    assert result.exit_code == 2 and "rank" in result.output
    result = runner.invoke(app, ["eval-llm", "--limit", "0"])
    assert result.exit_code == 2 and "--limit" in result.output
    result = runner.invoke(
        app, ["eval-llm", "--systems", "gpt9", "--data", str(DATA / "instructions_test.jsonl")]
    )
    assert result.exit_code == 2 and "gpt9" in result.output
