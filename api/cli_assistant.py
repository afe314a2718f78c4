"""`stockpilot ask "QUESTION"` (the guarded assistant) and `stockpilot eval-assistant` (its evaluation).

`ask --json` prints the answer object: {"answer", "intent", "entities", "facts": [{"name", "value", "unit",
"source"}], "sources", "guard": {"numbers_checked", "numbers_rejected", "fallback_used", ...},
"session_id", "latency_ms", "run_id", "follow_up"}. `eval-assistant --json` prints the metrics of
`llm.evaluate_assistant.evaluate` (and `--details` the per-question rows).
"""

from __future__ import annotations

from pathlib import Path

import typer

from api.cli_common import JsonOpt, console, guarded, out_console, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("eval-assistant")(eval_assistant)


@guarded
def ask(
    question: str = typer.Argument(..., help='A procurement question, e.g. "should I reorder 85123A?"'),
    session: str = typer.Option(None, "--session", help="Session id: follow-up questions use its last turn."),
    as_json: bool = JsonOpt,
) -> None:
    """Answer a procurement question from the active pipeline run's facts, with sources."""
    from llm.assistant import Assistant, validate_question

    question = validate_question(question)
    answer = Assistant().ask(question, session_id=session)
    if as_json:
        print_json(answer)
        return
    out_console.print(answer["answer"])
    sources = ", ".join(answer["sources"]) or "none"
    guard = answer["guard"]
    console.print(
        f"[dim]intent {answer['intent']}; sources: {sources}; numbers checked {guard['numbers_checked']}, "
        f"fallback {'yes' if guard.get('fallback_used') else 'no'}; session {answer['session_id']}; "
        f"{answer['latency_ms']:.0f} ms[/]"
    )


@guarded
def eval_assistant(
    dataset: str = typer.Option(None, "--dataset", help="demo or m5 (default: the active run's dataset)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate the first N questions only."),
    path: Path = typer.Option(None, "--path", help="Evaluation set (JSONL; default: the bundled one)."),
    details: bool = typer.Option(False, "--details", help="With --json: include one row per question."),
    no_model: bool = typer.Option(
        False, "--no-model", help="Plain fact sentences instead of the LLM (fast)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Intent accuracy, retrieval recall@5 and MRR, fact recall, number precision, latency, fallback rate."""
    from forecasting.pipeline import progress_bar
    from llm.assistant import Assistant
    from llm.evaluate_assistant import evaluate, load_eval_set

    assistant = Assistant(use_model=not no_model)
    items = load_eval_set(path, dataset=dataset, limit=limit, book=assistant.factbook)
    with progress_bar(len(items), f"evaluating {len(items)} questions", quiet=as_json) as step:
        report = evaluate(items, assistant, progress=step)
    if as_json:
        if not details:
            report.pop("rows", None)
        print_json(report)
        return
    metrics = {k: v for k, v in report.items() if k not in ("rows", "by_intent")}
    for key, value in metrics.items():
        out_console.print(f"{key}: {value}")
    import pandas as pd

    print_table(pd.DataFrame(report["by_intent"]), title="by intent")
