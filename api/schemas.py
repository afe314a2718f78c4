"""Request and response models of the HTTP API (they make the OpenAPI spec)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class Fact(BaseModel):
    """A number computed by code, with its unit and where it comes from."""

    name: str
    value: Any = None
    unit: str | None = None
    source: str | None = None


class HistoryPoint(BaseModel):
    ds: dt.date
    y: float


class ForecastPoint(BaseModel):
    ds: dt.date
    yhat: float
    yhat_lower: float | None = Field(None, description="Lower bound of the 90% interval.")
    yhat_upper: float | None = Field(None, description="Upper bound of the 90% interval.")


class ItemForecast(BaseModel):
    """One SKU's recent demand history and its forecast with the 90% interval, from the active run."""

    sku: str
    description: str | None = None
    model: str | None = Field(None, description="The method that produced the forecast.")
    run_id: str
    history: list[HistoryPoint]
    forecast: list[ForecastPoint]


class ForecastBatchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"skus": ["85123A", "22423"], "history": 12}]})

    skus: list[str] = Field(..., min_length=1, description="SKU codes (at most the batch limit).")
    history: int = Field(26, ge=0, description="Periods of history to include per SKU.")


class NotFoundSku(BaseModel):
    sku: str
    close_matches: list[str] = []


class UnknownSkuDetail(BaseModel):
    message: str
    sku: str
    close_matches: list[str] = []


class UnknownSku(BaseModel):
    """404 body for a SKU the active run does not have."""

    detail: UnknownSkuDetail


class ForecastBatchResponse(BaseModel):
    run_id: str
    items: list[ItemForecast]
    not_found: list[NotFoundSku] = []


class SkuKpis(BaseModel):
    """Inventory figures for one SKU (safety stock, reorder point, EOQ, risk, ...) and their facts."""

    sku: str
    description: str | None = None
    run_id: str
    kpis: dict[str, Any]
    facts: list[Fact]


class Recommendation(BaseModel):
    model_config = ConfigDict(extra="allow")

    unique_id: str
    description: str | None = None
    abc: str | None = None
    status: str | None = None
    order_qty: float | None = None
    latest_order_date: str | None = None
    stockout_prob: float | None = None
    vendor: str | None = None


class RecommendationList(BaseModel):
    run_id: str
    count: int
    items: list[Recommendation]


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"question": "How many 85123A will we sell next week?"}]}
    )

    question: str = Field(..., min_length=1, description="The question (at most the question-length limit).")
    session_id: str | None = Field(None, pattern=SESSION_PATTERN, description="Continue this conversation.")


class ChatAnswer(BaseModel):
    """The assistant's answer object: text, what it understood, the facts used, sources and guard verdict."""

    model_config = ConfigDict(extra="allow")

    answer: str
    intent: str | None = None
    entities: dict[str, Any] | list[Any] | None = None
    facts: list[Fact] = []
    sources: list[Any] = []
    guard: dict[str, Any] | str | None = None
    session_id: str | None = None
    latency_ms: float | None = None


class WeeklyReport(BaseModel):
    as_of: dt.date
    run_id: str | None = None
    summary: str | None = None
    formats: list[Literal["markdown", "html", "pdf"]]
    markdown: str | None = Field(None, description="The report's Markdown text.")


class RetrainRequest(BaseModel):
    activate: bool = Field(True, description="Activate the new run when it passes its backtest.")


class Job(BaseModel):
    """A background job (retraining); `status` is queued, running, succeeded, rejected or failed."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "rejected", "failed"]
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    base_run_id: str | None = None
    new_run_id: str | None = None
    active_run_id: str | None = None
    previous_run_id: str | None = None
    activated: bool = False
    checks: dict[str, Any] = {}
    message: str | None = None


class Health(BaseModel):
    status: Literal["ok", "no data"]
    version: str
    run_id: str | None = None
    run_created_at: dt.datetime | None = None
    data_as_of: dt.date | None = Field(None, description="Last period of demand in the active run.")
    data_age_days: int | None = None
    skus: int = 0
    models: dict[str, Any] = {}
    index: dict[str, Any] = {}
