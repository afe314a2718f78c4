"""Forecasts of the active run: one SKU (`GET /forecast/item/{sku}`) or a batch (`POST /forecast/items`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.config import APISettings
from api.deps import check_sku, get_book, get_settings_dep, invalid
from api.schemas import (
    ForecastBatchRequest,
    ForecastBatchResponse,
    ForecastPoint,
    HistoryPoint,
    ItemForecast,
    NotFoundSku,
    UnknownSku,
)
from forecasting.factbook import FactBook

router = APIRouter(prefix="/forecast", tags=["forecast"])
SkuPath = Path(..., max_length=64, description="SKU code (unique_id), e.g. 85123A or FOODS_1_001/CA_1.")


def item_forecast(book: FactBook, sku: str, history: int) -> ItemForecast:
    """History (last `history` periods) and forecast of one known SKU."""
    fc = book.forecast(sku)
    hist = book.history(sku, periods=history) if history > 0 else None
    points = [
        ForecastPoint(ds=r.ds.date(), yhat=r.yhat, yhat_lower=r.yhat_lower, yhat_upper=r.yhat_upper)
        for r in fc.itertuples(index=False)
    ]
    return ItemForecast(
        sku=sku,
        description=book.description(sku),
        model=str(fc["model"].iloc[0]) if "model" in fc.columns and len(fc) else None,
        run_id=book.run_id,
        history=[] if hist is None else [HistoryPoint(ds=r.ds.date(), y=r.y) for r in hist.itertuples()],
        forecast=points,
    )


def check_history(history: int, settings: APISettings) -> int:
    if history > settings.api_max_history_periods:
        limit = settings.api_max_history_periods
        raise invalid(("query", "history"), f"history is limited to {limit} periods (got {history})", history)
    return history


@router.get("/item/{sku:path}", response_model=ItemForecast, responses={404: {"model": UnknownSku}})
def get_item(
    sku: str = SkuPath,
    history: int = Query(26, ge=0, description="Periods of history to include."),
    book: FactBook = Depends(get_book),
    settings: APISettings = Depends(get_settings_dep),
) -> ItemForecast:
    """One SKU's forecast with its 90% interval and recent history; 404 with close matches if unknown."""
    return item_forecast(book, check_sku(book, sku), check_history(history, settings))


@router.post("/items", response_model=ForecastBatchResponse)
def post_items(
    body: ForecastBatchRequest,
    book: FactBook = Depends(get_book),
    settings: APISettings = Depends(get_settings_dep),
) -> ForecastBatchResponse:
    """Forecasts of several SKUs; unknown ones are listed in `not_found` with close matches."""
    if len(body.skus) > settings.api_max_batch_items:
        limit = settings.api_max_batch_items
        raise invalid(("body", "skus"), f"a batch is limited to {limit} SKUs (got {len(body.skus)})")
    history = check_history(body.history, settings)
    items, missing = [], []
    for sku in dict.fromkeys(body.skus):
        try:
            items.append(item_forecast(book, check_sku(book, sku), history))
        except HTTPException as exc:
            missing.append(NotFoundSku(sku=sku, close_matches=exc.detail["close_matches"]))
    return ForecastBatchResponse(run_id=book.run_id, items=items, not_found=missing)
