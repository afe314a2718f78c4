"""Order recommendations of the active run, filtered by ABC class, supplier and stockout risk."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query

from api.cli_common import to_jsonable
from api.deps import get_book
from api.schemas import RecommendationList
from forecasting.factbook import FactBook

router = APIRouter(tags=["inventory"])


@router.get("/recommendations", response_model=RecommendationList)
def get_recommendations(
    abc: Literal["A", "B", "C"] | None = Query(None, alias="class", description="ABC class."),
    supplier: str | None = Query(None, max_length=100, description="Supplier (vendor) name, exact."),
    risk: float | None = Query(None, ge=0, le=1, description="Minimum stockout probability (0-1)."),
    all_skus: bool = Query(False, alias="all", description="Include SKUs that need no order now."),
    limit: int = Query(50, ge=1, le=1000),
    book: FactBook = Depends(get_book),
) -> RecommendationList:
    """SKUs to order now (or all, with `all=true`), most urgent first: quantity, order-by date, risk."""
    table = book.table("order_advice") if all_skus else book.orders()
    if len(table):
        if not all_skus:
            table = table[table["status"] == "order now"]
        if abc:
            table = table[table["abc"].astype(str) == abc]
        if supplier is not None and "vendor" in table.columns:
            table = table[table["vendor"].astype(str) == supplier]
        if risk is not None:
            table = table[table["stockout_prob"] >= risk]
        table = table.sort_values(["days_to_order", "stockout_prob"], ascending=[True, False])
    rows = to_jsonable(table.head(limit)) if len(table) else []
    for row in rows:
        row["description"] = book.description(row["unique_id"])
        if isinstance(row.get("latest_order_date"), str):
            row["latest_order_date"] = row["latest_order_date"][:10]
    return RecommendationList(run_id=book.run_id, count=len(table), items=rows)
