"""Weekly reports listed in the store's `weekly_reports` table (written by the report job).

Dates are parsed strictly and looked up in the table; files are served from the paths the table records,
never from paths built from the request.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path as FilePath
from typing import Literal

import pandas as pd
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse

from api.deps import invalid
from api.schemas import WeeklyReport

router = APIRouter(prefix="/reports/weekly", tags=["reports"])
Format = Literal["json", "markdown", "html", "pdf"]
EXT = {"markdown": "md", "html": "html", "pdf": "pdf"}
MEDIA = {
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
FormatQuery = Query("json", description="json (metadata + Markdown text), markdown, html or pdf.")


def report_rows(request: Request) -> pd.DataFrame:
    """Stored reports, newest row per as-of date, oldest first."""
    frame = request.app.state.store.load("weekly_reports")
    if frame.empty or "as_of" not in frame.columns:
        return pd.DataFrame()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    return frame.drop_duplicates("as_of", keep="last").sort_values("as_of").reset_index(drop=True)


def _file(row: pd.Series, fmt: str) -> FilePath | None:
    value = row.get(f"{fmt}_path")
    if value is None or pd.isna(value) or not str(value):
        return None
    path = FilePath(str(value))
    return path if path.is_file() else None


def respond(row: pd.Series, fmt: Format) -> WeeklyReport | FileResponse:
    formats = [f for f in ("markdown", "html", "pdf") if _file(row, f) is not None]
    if fmt == "json":
        md = _file(row, "markdown")
        return WeeklyReport(
            as_of=row["as_of"],
            run_id=None if pd.isna(row.get("run_id")) else str(row.get("run_id")),
            summary=None if pd.isna(row.get("summary")) else str(row.get("summary")),
            formats=formats,
            markdown=md.read_text(encoding="utf-8") if md else None,
        )
    path = _file(row, fmt)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the report of {row['as_of']} has no {fmt} file")
    name = f"stockpilot-weekly-{row['as_of']}.{EXT[fmt]}"
    return FileResponse(path, media_type=MEDIA[fmt], filename=name, content_disposition_type="inline")


@router.get("", response_model=list[WeeklyReport])
def list_reports(request: Request) -> list[WeeklyReport]:
    """Every stored weekly report (newest last), without the Markdown text."""
    rows = report_rows(request)
    return [respond(row, "json").model_copy(update={"markdown": None}) for _, row in rows.iterrows()]


@router.get("/latest", response_model=WeeklyReport, responses={404: {"description": "No report yet"}})
def latest(request: Request, format: Format = FormatQuery):
    """The newest weekly report (JSON, or the file itself with `format`)."""
    rows = report_rows(request)
    if rows.empty:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no weekly report yet: run `stockpilot report weekly`")
    return respond(rows.iloc[-1], format)


@router.get("/{date}", response_model=WeeklyReport, responses={404: {"description": "No such report"}})
def by_date(
    request: Request,
    date: str = Path(..., pattern=r"^\d{4}-\d{2}-\d{2}$", description="As-of date, YYYY-MM-DD."),
    format: Format = FormatQuery,
):
    """The weekly report with this as-of date."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise invalid(("path", "date"), f"{date!r} is not a valid date", date) from None
    rows = report_rows(request)
    hit = rows[rows["as_of"] == day] if len(rows) else rows
    if hit.empty:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no weekly report for {day.isoformat()}")
    return respond(hit.iloc[-1], format)
