"""Benchmark the assistant end to end on the active run: `ask` latency percentiles, time to the first
streamed token, the share of answers the guard replaced, and the preparation time alone (no model).

    STOCKPILOT_HOME=... .venv/bin/python benchmarks/bench_assistant.py            # 20 questions, demo set
    .venv/bin/python benchmarks/bench_assistant.py --questions 40 --json out.json

Questions are the evaluation set's questions for the active run's dataset that need the model (plain and
named-SKU questions), in file order. The model is loaded (and the index opened) once before timing; the
machine's load average is printed with the figures, since on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20, help="questions to ask (and to stream)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from llm.assistant import Assistant
    from llm.evaluate_assistant import load_eval_set

    started = time.perf_counter()
    assistant = Assistant()
    items = [i for i in load_eval_set(book=assistant.factbook) if i["kind"] in ("plain", "name")]
    items = items[: args.questions]
    warm = assistant.ask(items[0]["question"])  # loads the model and the embedder
    setup = time.perf_counter() - started

    prepare_ms, ask_ms, first_ms, fallback = [], [], [], []
    for item in items:
        t = time.perf_counter()
        prepared = assistant.prepare(item["question"])
        prepare_ms.append((time.perf_counter() - t) * 1000)
        if not prepared.needs_model:
            continue
        answer = assistant.ask(item["question"])
        ask_ms.append(answer["latency_ms"])
        fallback.append(bool(answer["guard"]["fallback_used"]))
        t = time.perf_counter()
        events = assistant.stream(item["question"])
        for event in events:
            if event["type"] == "token":
                first_ms.append((time.perf_counter() - t) * 1000)
                break
        events.close()  # first token only: closing the stream stops the generation

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    figures = {
        "questions": len(items),
        "model_answers": len(ask_ms),
        "setup_seconds": round(setup, 1),
        "prepare_ms_p50": pct(prepare_ms, 50),
        "ask_ms_p50": pct(ask_ms, 50),
        "ask_ms_p95": pct(ask_ms, 95),
        "first_token_ms_p50": pct(first_ms, 50),
        "first_token_ms_p95": pct(first_ms, 95),
        "fallback_rate": round(float(np.mean(fallback)), 3) if fallback else None,
        "writer": getattr(assistant.writer, "name", type(assistant.writer).__name__),
        "threads": getattr(assistant.writer, "threads", None),
        "precision": getattr(getattr(assistant.writer, "loaded", None), "info", {}).get("dtype"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "warm_answer": warm["answer"][:200],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
