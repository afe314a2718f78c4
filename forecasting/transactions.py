"""Invoice lines (e.g. UCI Online Retail) to SKU x period demand in long format.

Rule for cancellations and returns: demand is what customers ordered. Lines of cancelled invoices
(invoice number starting with "C") and lines with a quantity <= 0 are returns or corrections; they are
left out of demand (and counted in the report) rather than netted, because a return does not undo
the need to have had the stock when the order came. Lines with a unit price <= 0 (free samples,
write-offs) and stock codes without any digit (postage, fees, discounts, manual adjustments such as
POST, DOT, M, D, BANK CHARGES, AMAZONFEE) are not merchandise and are left out too.
Each SKU runs from its first sale to the end of the data: periods without sales are zero demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.data import align_dates, pandas_freq
from forecasting.errors import InputError


@dataclass
class TransactionColumns:
    invoice: str = "InvoiceNo"
    sku: str = "StockCode"
    date: str = "InvoiceDate"
    quantity: str = "Quantity"
    price: str = "UnitPrice"
    description: str = "Description"


def clean_lines(df: pd.DataFrame, cols: TransactionColumns) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep sold merchandise lines; return them with a count of what each rule removed."""
    needed = [cols.sku, cols.date, cols.quantity]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(
            f"missing transaction column(s): {', '.join(missing)} "
            f"(available: {', '.join(map(str, df.columns))})"
        )
    out = df.copy()
    out[cols.date] = pd.to_datetime(out[cols.date], errors="coerce", format="mixed")
    out[cols.quantity] = pd.to_numeric(out[cols.quantity], errors="coerce")
    report = {"input_lines": len(out)}
    bad = out[cols.date].isna() | out[cols.quantity].isna()
    report["unparseable_lines"] = int(bad.sum())
    cancelled = (
        out[cols.invoice].astype(str).str.upper().str.startswith("C")
        if cols.invoice in out.columns
        else pd.Series(False, index=out.index)
    )
    report["cancelled_lines"] = int((cancelled & ~bad).sum())
    returns = (out[cols.quantity] <= 0) & ~cancelled & ~bad
    report["return_or_zero_lines"] = int(returns.sum())
    non_merch = ~out[cols.sku].astype(str).str.contains(r"\d", regex=True)
    if cols.price in out.columns:
        out[cols.price] = pd.to_numeric(out[cols.price], errors="coerce")
        non_merch |= ~(out[cols.price] > 0)
    non_merch &= ~(bad | cancelled | returns)
    report["non_merchandise_lines"] = int(non_merch.sum())
    keep = ~(bad | cancelled | returns | non_merch)
    out = out[keep].copy()
    out[cols.sku] = out[cols.sku].astype(str).str.strip().str.upper()
    report["kept_lines"] = len(out)
    if out.empty:
        raise InputError("no sold merchandise lines left after removing cancellations, returns and fees")
    return out, report


def transactions_to_demand(
    df: pd.DataFrame, freq: str = "W", cols: TransactionColumns | None = None
) -> tuple[pd.DataFrame, dict[str, int], str]:
    """Aggregate invoice lines to (unique_id=SKU, ds, y=units, price=average unit price) per period."""
    cols = cols or TransactionColumns()
    lines, report = clean_lines(df, cols)
    pfreq = pandas_freq(freq)
    lines["ds"] = align_dates(lines[cols.date], pfreq)
    has_price = cols.price in lines.columns
    lines["revenue"] = lines[cols.quantity] * lines[cols.price] if has_price else np.nan
    demand = (
        lines.groupby([cols.sku, "ds"], as_index=False)
        .agg(y=(cols.quantity, "sum"), revenue=("revenue", "sum"))
        .rename(columns={cols.sku: "unique_id"})
    )
    end = demand["ds"].max()
    offset = pd.tseries.frequencies.to_offset(pfreq)
    first = demand.groupby("unique_id")["ds"].min()
    grid = pd.concat(
        [
            pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, end, freq=offset)})
            for uid, start in first.items()
        ],
        ignore_index=True,
    )
    out = grid.merge(demand, on=["unique_id", "ds"], how="left")
    out["y"] = out["y"].fillna(0.0).astype(float)
    if has_price:
        price = (out["revenue"] / out["y"].where(out["y"] > 0)).astype(float)
        out["price"] = price.groupby(out["unique_id"]).transform(lambda s: s.ffill().bfill())
    out = out.drop(columns="revenue")
    report["skus"] = int(out["unique_id"].nunique())
    report["periods"] = int(out["ds"].nunique())
    return out.sort_values(["unique_id", "ds"]).reset_index(drop=True), report, pfreq


def sku_descriptions(df: pd.DataFrame, cols: TransactionColumns | None = None) -> pd.Series:
    """The most frequent description per SKU (for reports and the assistant)."""
    cols = cols or TransactionColumns()
    if cols.description not in df.columns:
        return pd.Series(dtype=str)
    d = df[[cols.sku, cols.description]].dropna()
    d[cols.sku] = d[cols.sku].astype(str).str.strip().str.upper()
    return d.groupby(cols.sku)[cols.description].agg(lambda s: s.value_counts().index[0]).str.strip()
