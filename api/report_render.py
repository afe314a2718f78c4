"""The weekly report as Markdown and as one self-contained HTML file (charts embedded as base64 PNG), and as
PDF when the optional `weasyprint` package is installed (it is not a dependency; without it: no PDF).

Both formats show the same cells: `sections(report)` formats every table once with `format_value`,
so a number reads the same in Markdown, HTML and tests (quantities with thousands separators, rates and
probabilities as percents with one decimal, dates as YYYY-MM-DD).
"""

from __future__ import annotations

import base64
import importlib.util
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

if TYPE_CHECKING:
    from api.report_weekly import WeeklyReport

# column -> (header, kind); kinds: text, int (units), num and days (one decimal), money (two decimals), pct
# (a percent value), prob (a ratio shown as a percent), score (three decimals), date, datetime
RECOMMENDATION_COLUMNS = {
    "unique_id": ("SKU", "text"),
    "description": ("Description", "text"),
    "order_qty": ("Quantity", "int"),
    "latest_order_date": ("Order by", "date"),
    "vendor": ("Supplier", "text"),
    "stockout_prob": ("Stockout probability", "prob"),
    "order_value": ("Order value", "money"),
}
RISK_COLUMNS = {
    "unique_id": ("SKU", "text"),
    "description": ("Description", "text"),
    "stockout_prob": ("Stockout probability", "prob"),
    "days_of_cover": ("Days of cover", "days"),
    "lead_time_days": ("Lead time (days)", "days"),
    "inventory_position": ("Inventory position", "int"),
    "reorder_point": ("Reorder point", "int"),
    "status": ("Status", "text"),
}
ACCURACY_COLUMNS = {
    "group_by": ("By", "text"),
    "group": ("Group", "text"),
    "skus": ("SKUs", "int"),
    "actual": ("Sold", "int"),
    "forecast": ("Forecast", "int"),
    "mae": ("MAE", "num"),
    "mape": ("MAPE", "pct"),
    "smape": ("sMAPE", "pct"),
    "bias": ("Bias", "num"),
}
TREND_COLUMNS = {
    "week": ("Week", "date"),
    "source": ("Forecast source", "text"),
    **{k: v for k, v in ACCURACY_COLUMNS.items() if k not in ("group_by", "group")},
}
CHANGE_COLUMNS = {
    "unique_id": ("SKU", "text"),
    "description": ("Description", "text"),
    "total_before": ("Forecast last week", "int"),
    "total_now": ("Forecast now", "int"),
    "change": ("Change", "int"),
    "change_pct": ("Change %", "pct"),
    "driver": ("Likely reason", "text"),
    "driver_note": ("Detail", "text"),
    "attention": ("LSTM attention (top past week)", "text"),
}
LEAD_TIME_COLUMNS = {
    "vendor": ("Supplier", "text"),
    "n_pos": ("POs", "int"),
    "mean_days": ("Mean lead time (days)", "days"),
    "mean_days_before": ("Last week (days)", "days"),
    "change_days": ("Change (days)", "days"),
    "p90_days": ("90th percentile (days)", "days"),
    "on_time_rate": ("On time", "prob"),
    "trend_days_per_30d": ("Trend (days per 30 days)", "days"),
}
UNUSUAL_COLUMNS = {
    "invoice": ("Invoice", "text"),
    "customer_id": ("Customer", "text"),
    "ts": ("Placed", "datetime"),
    "value": ("Value", "money"),
    "quantity": ("Units", "int"),
    "n_lines": ("Lines", "int"),
    "anomaly_score": ("Score", "score"),
    "reasons": ("Why it is unusual", "text"),
}


NUMERIC_KINDS = {"int", "num", "days", "money", "pct", "prob", "score"}


def format_value(value: Any, kind: str) -> str:
    """One table cell as text (empty for missing values)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if kind == "text":
        return str(value)
    if kind in ("date", "datetime"):
        ts = pd.Timestamp(value)
        return f"{ts:%Y-%m-%d %H:%M}" if kind == "datetime" else f"{ts:%Y-%m-%d}"
    number = float(value)
    if kind == "int":
        return f"{number:,.0f}"
    if kind == "pct":
        return f"{number:.1f}%"
    if kind == "prob":
        return f"{100 * number:.1f}%"
    if kind == "score":
        return f"{number:.3f}"
    if kind == "money":
        return f"{number:,.2f}"
    return f"{number:,.1f}"


@dataclass
class Section:
    """One report section: a title, an introduction, an optional table (header + formatted rows), an
    optional chart (file stem) and a note when the data is missing."""

    key: str
    title: str
    intro: str = ""
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    chart: str | None = None
    missing: str = ""

    @property
    def numeric(self) -> list[bool]:
        """Per column: whether it holds numbers (right-aligned in HTML)."""
        return [_HEADER_KINDS.get(h) in NUMERIC_KINDS for h in self.header or []]


_HEADER_KINDS = {
    header: kind
    for spec in (
        RECOMMENDATION_COLUMNS,
        RISK_COLUMNS,
        ACCURACY_COLUMNS,
        TREND_COLUMNS,
        CHANGE_COLUMNS,
        LEAD_TIME_COLUMNS,
        UNUSUAL_COLUMNS,
    )
    for header, kind in spec.values()
}


def table_cells(
    frame: pd.DataFrame | None, columns: dict[str, tuple[str, str]]
) -> tuple[list[str], list[list[str]]]:
    """(header, rows of formatted cells) for the columns of `columns` present in `frame`."""
    if frame is None or frame.empty:
        return [h for h, _ in columns.values()], []
    cols = [c for c in columns if c in frame.columns]
    rows = [
        [format_value(row[c], columns[c][1]) for c in cols] for row in frame[cols].to_dict(orient="records")
    ]
    return [columns[c][0] for c in cols], rows


def sections(report: WeeklyReport) -> list[Section]:
    """The report's sections in reading order."""
    out = []
    n = len(report.recommendations)
    header, rows = table_cells(report.recommendations, RECOMMENDATION_COLUMNS)
    out.append(
        Section(
            "recommendations",
            "Top reorder recommendations",
            f"{report.to_order_now:,} SKUs to order now; the {n} most urgent, by order-by date.",
            header,
            rows,
            missing="Nothing to order this week.",
        )
    )
    header, rows = table_cells(report.risks, RISK_COLUMNS)
    out.append(
        Section(
            "risks",
            "Stockout risks before the next delivery",
            "Probability that demand over the lead time exceeds the inventory position.",
            header,
            rows,
            chart="top_risks",
            missing="No SKU has a stockout risk of 5% or more.",
        )
    )
    header, rows = table_cells(report.accuracy, ACCURACY_COLUMNS)
    out.append(
        Section(
            "accuracy",
            "Forecast accuracy last week",
            "One-week-ahead forecasts against what actually sold: MAE in units, MAPE (weeks with "
            "sales only) and sMAPE in percent, bias = forecast minus sold (positive: over-forecast).",
            header,
            rows,
            missing="No forecast for last week to compare with yet.",
        )
    )
    header, rows = table_cells(report.accuracy_trend, TREND_COLUMNS)
    out.append(
        Section(
            "accuracy_trend",
            "Accuracy trend over recent weeks",
            "",
            header,
            rows,
            chart="accuracy_trend",
            missing="No recent weeks to compare.",
        )
    )
    header, rows = table_cells(report.changes, CHANGE_COLUMNS)
    intro = "Forecast totals over the horizon now against the run one week earlier, largest changes first."
    out.append(
        Section(
            "changes",
            "Biggest forecast changes vs last week",
            intro,
            header,
            rows,
            missing="No pipeline run from one week earlier to compare with.",
        )
    )
    header, rows = table_cells(
        report.abc_xyz, {c: (str(c), "text" if c == "ABC" else "int") for c in report.abc_xyz.columns}
    )
    out.append(
        Section(
            "abc_xyz",
            "ABC/XYZ overview",
            "SKU counts: ABC by annual sales value (A: top 80%), XYZ by demand variability "
            "(X: steady, Z: erratic).",
            header,
            rows,
        )
    )
    header, rows = table_cells(report.lead_times, LEAD_TIME_COLUMNS)
    out.append(
        Section(
            "lead_times",
            "Supplier lead-time changes",
            "",
            header if rows else None,
            rows or None,
            missing="No purchase-order history in this run: lead times are assumed defaults.",
        )
    )
    if report.unusual_orders is None:
        out.append(Section("unusual", "Unusual orders", missing="No customer data for this dataset."))
    else:
        header, rows = table_cells(report.unusual_orders, UNUSUAL_COLUMNS)
        out.append(
            Section(
                "unusual",
                "Unusual orders",
                "Orders of the week an Isolation Forest over the last quarter's invoices flags as "
                "unusual, with their oddest features.",
                header,
                rows,
                missing="No unusual orders this week.",
            )
        )
    out.append(Section("top_items", "Demand history and forecast of the top items", chart="history_forecast"))
    return out


def _title(report: WeeklyReport) -> str:
    return f"StockPilot weekly procurement report: week of {report.as_of:%d %B %Y}"


def _subtitle(report: WeeklyReport) -> str:
    return (
        f"{report.dataset}, {report.as_of:%Y-%m-%d} to {report.week_end:%Y-%m-%d}; "
        f"results store run {report.run_id}; "
        f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def _guard_line(report: WeeklyReport) -> str:
    check = report.summary_check
    if not check:
        return ""
    if check.get("fallback_reason") == "key facts missing":
        how = "Built from the facts (the language model's text left out the key figures)"
    elif check.get("fallback_used"):
        how = "Built from the facts (the language model's text did not pass the number guard)"
    else:
        how = "Written by the language model from the facts"
    return f"{how}; {check.get('numbers_checked', 0)} numbers checked by the number guard."


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: WeeklyReport) -> str:
    """The report as Markdown; charts are linked as the PNG files next to it."""
    parts = [f"# {_title(report)}", f"_{_subtitle(report)}_", "## Summary", report.summary]
    if _guard_line(report):
        parts.append(f"_{_guard_line(report)}_")
    for s in sections(report):
        parts.append(f"## {s.title}")
        if s.intro:
            parts.append(s.intro)
        if s.rows:
            parts.append(markdown_table(s.header or [], s.rows))
        elif s.missing:
            parts.append(s.missing)
        if s.chart:
            parts.append(f"![{s.title}]({s.chart}.png)")
    if report.notes:
        parts.append("## Notes")
        parts.append("\n".join(f"- {n}" for n in report.notes))
    return "\n\n".join(parts) + "\n"


_env = Environment(loader=PackageLoader("api", "templates"), autoescape=select_autoescape(["html", "j2"]))


def render_html(report: WeeklyReport, charts: dict[str, bytes]) -> str:
    """The report as one HTML page with its charts inlined (data: URIs), no external resources."""
    images = {
        name: "data:image/png;base64," + base64.b64encode(png).decode("ascii") for name, png in charts.items()
    }
    return _env.get_template("weekly_report.html.j2").render(
        title=_title(report),
        subtitle=_subtitle(report),
        summary=report.summary,
        guard=_guard_line(report),
        sections=sections(report),
        images=images,
        notes=report.notes,
    )


def pdf_available() -> bool:
    """Whether the optional PDF renderer (weasyprint) is installed."""
    return importlib.util.find_spec("weasyprint") is not None


def render_pdf(html: str, path: Path) -> Path | None:
    """Write `html` as PDF at `path` with weasyprint when it is installed; None otherwise."""
    if not pdf_available():
        return None
    import weasyprint

    from forecasting.io import atomic_write_bytes

    return atomic_write_bytes(path, weasyprint.HTML(string=html).write_pdf())
