"""Weekly report end to end on the demo data: how long a first report takes (two pipeline runs, rolling-origin
refits for the accuracy trend, unusual orders, summary, files, knowledge base) and a second one on the
stored runs.

    python benchmarks/bench_report.py [--skus 100] [--as-of 2011-11-20] [--model auto] [--weeks 6]

Runs in a temporary STOCKPILOT_HOME; prints seconds per step and the report's headline figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=100, help="best-selling SKUs of the demo data")
    parser.add_argument("--as-of", default="2011-11-20")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--weeks", type=int, default=6, help="weeks in the accuracy trend")
    args = parser.parse_args()
    os.environ["STOCKPILOT_HOME"] = tempfile.mkdtemp(prefix="bench-report-")

    from api.report_weekly import ReportSettings, generate_weekly_report
    from forecasting.demo import demo_demand

    demand, _, _, _ = demo_demand()
    skus = demand.groupby("unique_id")["y"].sum().nlargest(args.skus).index.tolist()
    settings = ReportSettings(report_model=args.model, report_trend_weeks=args.weeks)
    steps: list[tuple[str, float]] = []
    start = time.perf_counter()

    def progress(message: str) -> None:
        steps.append((message, time.perf_counter() - start))

    first = generate_weekly_report(args.as_of, skus=skus, settings=settings, progress=progress)
    first_s = time.perf_counter() - start
    # the step timings that matter: pipeline runs, refits, unusual orders, summary, saving
    marks = [
        (m, round(t, 1)) for m, t in steps if not m.startswith(("backtesting", "fitting", "classifying"))
    ]
    again = time.perf_counter()
    second = generate_weekly_report(args.as_of, skus=skus, settings=settings)
    second_s = time.perf_counter() - again
    print(
        json.dumps(
            {
                "skus": args.skus,
                "model": args.model,
                "as_of": first.as_of.date().isoformat(),
                "first_report_s": round(first_s, 1),
                "second_report_s": round(second_s, 1),
                "steps_s": marks,
                "to_order_now": first.to_order_now,
                "accuracy_last_week": first.accuracy.to_dict(orient="records")[:1],
                "trend_sources": first.accuracy_trend["source"].tolist(),
                "summary_fallback": first.summary_check.get("fallback_used"),
                "pdf": second.to_json()["pdf"],
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
