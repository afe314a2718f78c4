"""`stockpilot report weekly [--as-of DATE] [--json]`: write the weekly procurement report.

Without `--as-of` the report covers the active pipeline run's week; with it, the last complete week up to
DATE (the pipeline runs on the data up to that week first when no stored run matches). `--json` prints
{"markdown": PATH, "html": PATH, "pdf": PATH or null, "summary": TEXT, "facts": [...], "recommendations": N}.

Cron, for deployments without the API process (which schedules it itself, see api/scheduler.py):
    0 7 * * 1  cd /srv/stockpilot && .venv/bin/stockpilot report weekly --json >> .stockpilot/report.log 2>&1
"""

from __future__ import annotations

import typer

from api.cli_common import JsonOpt, guarded, out_console, print_json

report_app = typer.Typer(help="Reports: the weekly procurement report.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


@report_app.command("weekly")
@guarded
def weekly(
    as_of: str = typer.Option(
        None,
        "--as-of",
        help="Report the last complete week up to this date (YYYY-MM-DD); default: the active run.",
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="Dataset of the runs (default: the active run's, else the demo data)."
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Write the weekly report (Markdown, HTML with charts, PDF when weasyprint is installed)."""
    from api.report_weekly import generate_weekly_report
    from forecasting.pipeline import pipeline_steps, progress_bar

    # the bar's total covers two pipeline runs; a report on stored runs finishes early
    with progress_bar(2 * pipeline_steps() + 8, "preparing the weekly report", quiet=json_out) as step:
        report = generate_weekly_report(as_of, dataset=dataset, progress=step)
    if json_out:
        print_json(report.to_json())
        return
    out_console.print(f"[bold]Weekly report, week of {report.as_of:%Y-%m-%d}[/] (run {report.run_id})")
    out_console.print(report.summary)
    out_console.print(f"{report.to_order_now:,} SKUs to order now")
    for kind, path in report.paths.items():
        out_console.print(f"{kind}: {path if path else 'not written (pip install weasyprint for PDF)'}")
