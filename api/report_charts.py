"""The weekly report's charts as PNG bytes (matplotlib, Agg backend, no pyplot: safe in the scheduler thread).

- `accuracy_trend`: MAE and sMAPE of the one-week-ahead forecast over recent weeks (hollow markers: weeks
  whose forecast was recomputed with the engine rather than read from a stored run).
- `top_risks`: stockout probability before the next delivery of the riskiest SKUs.
- `history_forecast`: recent demand and the forecast with its 90% interval for the top items.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from api.report_weekly import WeeklyReport

DPI = 110
HISTORY_PERIODS = 26
BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#7f7f7f"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _empty(fig: Figure, title: str, message: str) -> bytes:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", color=GREY, wrap=True)
    return _png(fig)


def accuracy_trend_chart(trend: pd.DataFrame) -> bytes:
    """MAE (left axis) and sMAPE (right axis) per week."""
    fig = Figure(figsize=(7.5, 3.4))
    title = "Forecast accuracy, one week ahead"
    if trend.empty:
        return _empty(fig, title, "no weeks with forecasts and sales yet")
    t = trend.sort_values("week")
    ax = fig.add_subplot()
    refit = t["source"].astype(str).str.startswith("rolling").to_numpy()
    ax.plot(t["week"], t["mae"], color=BLUE, label="MAE (units)")
    ax.scatter(t["week"][~refit], t["mae"][~refit], color=BLUE, zorder=3, label="stored forecast")
    ax.scatter(
        t["week"][refit],
        t["mae"][refit],
        facecolors="white",
        edgecolors=BLUE,
        zorder=3,
        label="recomputed forecast",
    )
    ax.set_ylabel("MAE (units)", color=BLUE)
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(t["week"], t["smape"], color=ORANGE, linestyle="--", marker="s", label="sMAPE (%)")
    right.set_ylabel("sMAPE (%)", color=ORANGE)
    right.set_ylim(0, max(100.0, float(t["smape"].max()) * 1.3) if t["smape"].notna().any() else 100.0)
    ax.set_title(title)
    ax.set_xlabel("week")
    ax.set_xticks(t["week"], [f"{w:%Y-%m-%d}" for w in t["week"]])
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=4, fontsize=8, frameon=False
    )
    fig.autofmt_xdate()
    return _png(fig)


def top_risks_chart(risks: pd.DataFrame) -> bytes:
    """Horizontal bars: stockout probability before the next delivery, highest on top."""
    fig = Figure(figsize=(7.5, 0.45 * max(len(risks), 3) + 1.2))
    title = "Stockout risk before the next delivery"
    if risks.empty:
        return _empty(fig, title, "no SKU at risk")
    r = risks.iloc[::-1]
    labels = [f"{u}  {str(d)[:28]}" for u, d in zip(r["unique_id"], r["description"], strict=False)]
    ax = fig.add_subplot()
    bars = ax.barh(labels, 100 * r["stockout_prob"].astype(float), color=ORANGE)
    ax.bar_label(bars, labels=[f"{100 * p:.1f}%" for p in r["stockout_prob"]], padding=3, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("stockout probability (%)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def history_forecast_chart(
    history: pd.DataFrame, forecast: pd.DataFrame, descriptions: dict[str, str]
) -> bytes:
    """One panel per item (in the order of `descriptions`): the last HISTORY_PERIODS periods of demand, the
    forecast and its 90% interval."""
    ids = set(forecast["unique_id"]) if len(forecast) else set()
    skus = [s for s in descriptions if s in ids] or sorted(ids)
    title = "Demand history and forecast"
    if not skus:
        return _empty(Figure(figsize=(7.5, 2.5)), title, "no forecast")
    fig = Figure(figsize=(7.5, 2.4 * len(skus)))
    axes = fig.subplots(len(skus), 1, squeeze=False)[:, 0]
    for ax, sku in zip(axes, skus, strict=True):
        h = history[history["unique_id"] == sku].sort_values("ds").tail(HISTORY_PERIODS)
        f = forecast[forecast["unique_id"] == sku].sort_values("ds")
        ax.plot(h["ds"], h["y"], color=GREY, marker=".", label="sold")
        ax.plot(f["ds"], f["yhat"], color=BLUE, marker=".", label="forecast")
        ax.fill_between(
            f["ds"], f["yhat_lower"], f["yhat_upper"], color=BLUE, alpha=0.2, label="90% interval"
        )
        ax.set_title(f"{sku} {descriptions.get(sku, '')}".strip(), fontsize=9)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=8)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.autofmt_xdate()
    return _png(fig)


def render_charts(report: WeeklyReport) -> dict[str, bytes]:
    """All charts of a report, by file stem."""
    return {
        "accuracy_trend": accuracy_trend_chart(report.accuracy_trend),
        "top_risks": top_risks_chart(report.risks),
        "history_forecast": history_forecast_chart(report.history, report.forecast, report.descriptions),
    }
