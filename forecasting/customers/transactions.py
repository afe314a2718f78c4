"""Clean invoice lines (e.g. UCI Online Retail) into customer purchases and returns.

Rules, in order:
1. Lines without a customer id are left out (customer analytics needs one), as are lines whose date,
   quantity or price cannot be parsed.
2. Stock codes without any digit (POST, DOT, M, D, S, B, PADS, CRUK, BANK CHARGES, AMAZONFEE, ...) are
   postage, fees, discounts and manual adjustments, not merchandise: left out of everything.
3. A *return* is a line of a cancellation invoice (number starting with "C") or a line with a negative
   quantity. Returns never count as purchases; their value feeds each customer's return rate.
4. A *purchase* is any other line with quantity > 0 and unit price > 0 (price 0 lines are free samples
   or write-offs and are left out).
5. A voided order line: when a return has exactly the quantity of the same customer's most recent
   earlier purchase line of the same SKU, that purchase line is removed (each purchase line at most
   once). This undoes keying errors such as the 80,995-unit order cancelled 12 minutes later, so they
   do not dominate spend. The return still counts towards the return rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from forecasting.errors import InputError


@dataclass(frozen=True)
class TransactionColumns:
    """Column names of an invoice-line table; defaults fit UCI Online Retail."""

    invoice: str = "InvoiceNo"
    customer: str = "CustomerID"
    date: str = "InvoiceDate"
    sku: str = "StockCode"
    quantity: str = "Quantity"
    price: str = "UnitPrice"
    description: str | None = "Description"
    country: str | None = "Country"

    def required(self) -> list[str]:
        return [self.invoice, self.customer, self.date, self.sku, self.quantity, self.price]


@dataclass
class Transactions:
    """Clean purchase and return lines, one row per line, with standard column names.

    `lines`: invoice, customer_id, ts, sku, quantity, price, amount (and description, country when given).
    `returns`: invoice, customer_id, ts, sku, quantity (positive), amount (positive).
    `report`: how many input lines each rule removed.
    """

    lines: pd.DataFrame
    returns: pd.DataFrame
    report: dict[str, int] = field(default_factory=dict)

    @property
    def start(self) -> pd.Timestamp:
        return self.lines["ts"].min()

    @property
    def end(self) -> pd.Timestamp:
        return self.lines["ts"].max()

    @property
    def customers(self) -> pd.Index:
        return pd.Index(self.lines["customer_id"].unique())

    @cached_property
    def invoices(self) -> pd.DataFrame:
        """One row per purchase invoice: customer_id, ts, value, quantity, n_lines, n_skus."""
        g = self.lines.groupby("invoice", sort=False)
        out = g.agg(
            customer_id=("customer_id", "first"),
            ts=("ts", "min"),
            value=("amount", "sum"),
            quantity=("quantity", "sum"),
            n_lines=("sku", "size"),
            n_skus=("sku", "nunique"),
        ).reset_index()
        return out.sort_values(["ts", "invoice"], kind="stable").reset_index(drop=True)

    def before(self, cutoff: pd.Timestamp | str) -> Transactions:
        """Only what happened strictly before `cutoff` (for time-split evaluation)."""
        cut = pd.Timestamp(cutoff)
        lines = self.lines[self.lines["ts"] < cut].reset_index(drop=True)
        if lines.empty:
            raise InputError(f"no purchases before {cut:%Y-%m-%d}")
        returns = self.returns[self.returns["ts"] < cut].reset_index(drop=True)
        return Transactions(lines, returns, dict(self.report))

    def between(self, start: pd.Timestamp | str, end: pd.Timestamp | str) -> pd.DataFrame:
        """Purchase lines with start <= ts < end."""
        ts = self.lines["ts"]
        return self.lines[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))]

    def sku_descriptions(self) -> pd.Series:
        """Most frequent description per SKU (empty when the input had no description column)."""
        if "description" not in self.lines.columns:
            return pd.Series(dtype=str)
        d = self.lines[["sku", "description"]].dropna()
        counts = d.groupby(["sku", "description"], sort=False).size().reset_index(name="n")
        counts = counts.sort_values(["sku", "n"], ascending=[True, False], kind="stable")
        return counts.drop_duplicates("sku").set_index("sku")["description"].str.strip()


def _customer_ids(values: pd.Series) -> pd.Series:
    """Customer ids as clean strings: 17850.0 -> '17850', empty -> NaN."""
    if pd.api.types.is_float_dtype(values):
        valid = values.dropna()
        if len(valid) and np.all(np.mod(valid.to_numpy(), 1) == 0):
            return values.astype("Int64").astype(str).where(values.notna())
    text = values.astype(str).str.strip()
    text = text.str.replace(r"\.0$", "", regex=True)
    return text.where(values.notna() & ~text.isin(["", "nan", "None", "NaN"]))


def clean_transactions(df: pd.DataFrame, cols: TransactionColumns | None = None) -> Transactions:
    """Apply the module's rules to a raw invoice-line table; InputError if the table is unusable."""
    cols = cols or TransactionColumns()
    if df is None or len(df) == 0:
        raise InputError("input has no rows")
    missing = [c for c in dict.fromkeys(cols.required()) if c not in df.columns]
    if missing:
        raise InputError(
            f"missing transaction column(s): {', '.join(missing)} "
            f"(available: {', '.join(map(str, df.columns))}; set them with --invoice-col, --customer-col, "
            "--date-col, --sku-col, --quantity-col, --price-col)"
        )
    report = {"input_lines": len(df)}
    out = pd.DataFrame(
        {
            "invoice": df[cols.invoice].astype(str).str.strip(),
            "customer_id": _customer_ids(df[cols.customer]),
            "ts": pd.to_datetime(df[cols.date], errors="coerce", format="mixed"),
            "sku": df[cols.sku].astype(str).str.strip().str.upper(),
            "quantity": pd.to_numeric(df[cols.quantity], errors="coerce"),
            "price": pd.to_numeric(df[cols.price], errors="coerce"),
        }
    )
    if getattr(out["ts"].dt, "tz", None) is not None:
        out["ts"] = out["ts"].dt.tz_localize(None)
    for name in ("description", "country"):
        col = getattr(cols, name)
        if col and col in df.columns:
            out[name] = df[col].astype("string").str.strip().astype(object)
    no_customer = out["customer_id"].isna()
    report["no_customer_lines"] = int(no_customer.sum())
    bad = ~no_customer & (out["ts"].isna() | out["quantity"].isna() | out["price"].isna())
    report["unparseable_lines"] = int(bad.sum())
    if (out["ts"].isna() | no_customer).all():
        raise InputError(
            f"no usable lines: every row lacks a customer id ({cols.customer!r}) or a parseable date "
            f"({cols.date!r})"
        )
    out = out[~no_customer & ~bad]
    non_merch = ~out["sku"].str.contains(r"\d", regex=True)
    report["non_merchandise_lines"] = int(non_merch.sum())
    out = out[~non_merch]
    is_return = out["invoice"].str.upper().str.startswith("C") | (out["quantity"] < 0)
    returns = out[is_return].copy()
    returns["quantity"] = returns["quantity"].abs()
    returns["amount"] = returns["quantity"] * returns["price"].abs()
    report["return_lines"] = len(returns)
    purchase = ~is_return & (out["quantity"] > 0) & (out["price"] > 0)
    report["zero_price_or_quantity_lines"] = int((~is_return & ~purchase).sum())
    lines = out[purchase].copy()
    lines["amount"] = lines["quantity"] * lines["price"]
    lines, n_voided = _drop_voided(lines, returns)
    report["voided_purchase_lines"] = n_voided
    report["purchase_lines"] = len(lines)
    if lines.empty:
        raise InputError("no purchase lines left after removing returns, fees and lines without a customer")
    lines = lines.sort_values(["ts", "invoice"], kind="stable").reset_index(drop=True)
    returns = returns.sort_values("ts", kind="stable").reset_index(drop=True)
    return Transactions(lines, returns, report)


def _drop_voided(lines: pd.DataFrame, returns: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Remove purchase lines that a later return of exactly the same quantity undid (rule 5)."""
    if returns.empty:
        return lines, 0
    keys = ["customer_id", "sku", "quantity"]
    left = returns[["ts", *keys]].sort_values("ts", kind="stable")
    right = lines[["ts", *keys]].assign(line=lines.index).sort_values("ts", kind="stable")
    left = left.astype({"quantity": float})
    right = right.astype({"quantity": float})
    matched = pd.merge_asof(left, right, on="ts", by=keys, direction="backward")
    voided = matched["line"].dropna().astype(lines.index.dtype).unique()
    return lines.drop(index=voided), len(voided)


def report_lines(report: dict[str, int]) -> list[str]:
    """Human-readable summary of what cleaning removed."""
    return [f"{k.replace('_', ' ')}: {v:,}" for k, v in report.items()]
