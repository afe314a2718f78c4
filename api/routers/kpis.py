"""Inventory figures of one SKU in the active run (`GET /kpis/{sku}`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.cli_common import to_jsonable
from api.deps import check_sku, get_book
from api.routers.forecast import SkuPath
from api.schemas import SkuKpis, UnknownSku
from forecasting.factbook import FactBook

router = APIRouter(tags=["inventory"])


@router.get("/kpis/{sku:path}", response_model=SkuKpis, responses={404: {"model": UnknownSku}})
def get_kpis(sku: str = SkuPath, book: FactBook = Depends(get_book)) -> SkuKpis:
    """Safety stock, reorder point, EOQ, stockout probability, ... and every fact about the SKU."""
    sku = check_sku(book, sku)
    return SkuKpis(
        sku=sku,
        description=book.description(sku),
        run_id=book.run_id,
        kpis=to_jsonable(book.kpis(sku)),
        facts=book.sku_facts(sku),
    )
