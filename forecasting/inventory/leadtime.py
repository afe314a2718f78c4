"""Supplier lead times from purchase-order history, open purchase orders, and lead-time sampling.

A lead time is the days from the PO date to the receiving date (or, where a PO has none, the invoice
date). Per vendor: count, mean, standard deviation, 50th/90th percentiles, trend (least-squares slope
in days per 30 days of PO date; 0 when the POs span under 60 days) and the on-time rate against a
promised lead time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.errors import InputError

DEFAULT_PROMISED_DAYS = 14.0  # assumed promised lead time where a vendor has none
ALL_VENDORS = "ALL"
MIN_TREND_SPAN_DAYS = 60  # a trend needs POs spread over at least this many days (else reported as 0)
RECEIPT_COLUMNS = ("ReceivingDate", "InvoiceDate")


def parse_dates(values: pd.Series, column: str) -> pd.Series:
    """Parse ISO dates, or day-first dates (31-12-2016) when they are not ISO; empty stays NaT."""
    text = values.astype("string").str.strip()
    text = text.where(text != "", None)
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if (parsed.isna() & text.notna()).any():
        parsed = pd.to_datetime(text, errors="coerce", dayfirst=True, format="mixed")
    bad = parsed.isna() & text.notna()
    if bad.any():
        raise InputError(f"column {column!r} has unparseable dates, e.g. {text[bad].iloc[0]!r}")
    return parsed


def po_lead_times(
    po: pd.DataFrame,
    vendor_col: str = "VendorNumber",
    po_date_col: str = "PODate",
    receipt_cols: tuple[str, ...] | list[str] | None = None,
    po_col: str | None = "PONumber",
) -> pd.DataFrame:
    """One row per PO: vendor, po_date, receipt_date (NaT while open), lead_time_days (NaN while open).

    `receipt_cols` are tried in order per row (default: ReceivingDate, then InvoiceDate). When the
    table has one row per PO line, lines sharing `po_col` and vendor become one PO (last receipt).
    """
    receipt_cols = [c for c in (receipt_cols or RECEIPT_COLUMNS) if c in po.columns]
    missing = [c for c in (vendor_col, po_date_col) if c not in po.columns]
    if missing or not receipt_cols:
        need = ", ".join(missing + ([] if receipt_cols else ["ReceivingDate or InvoiceDate"]))
        raise InputError(f"purchase-order history is missing column(s): {need}")
    if po[vendor_col].isna().any():
        raise InputError(f"purchase-order history has rows without a vendor ({vendor_col!r})")
    po_date = parse_dates(po[po_date_col], po_date_col)
    if po_date.isna().any():
        raise InputError(f"purchase-order history has rows without a PO date ({po_date_col!r})")
    receipt = pd.Series(pd.NaT, index=po.index, dtype="datetime64[ns]")
    for col in receipt_cols:
        receipt = receipt.fillna(parse_dates(po[col], col))
    days = (receipt - po_date).dt.days.astype(float)
    if (days < 0).any():
        row = int(np.flatnonzero((days < 0).to_numpy())[0])
        raise InputError(f"purchase order at row {row + 1} is received before it was placed")
    out = pd.DataFrame(
        {
            "vendor": _vendor_keys(po[vendor_col]),
            "po_date": po_date.to_numpy(),
            "receipt_date": receipt.to_numpy(),
            "lead_time_days": days.to_numpy(),
        }
    )
    if po_col and po_col in po.columns and po[po_col].duplicated().any():
        out["po"] = po[po_col].astype(str).to_numpy()
        out["pending"] = out["receipt_date"].isna()
        out = (
            out.groupby(["vendor", "po"], sort=False)
            .agg(po_date=("po_date", "min"), receipt_date=("receipt_date", "max"), pending=("pending", "any"))
            .reset_index()
        )
        out["receipt_date"] = out["receipt_date"].where(~out["pending"])
        out["lead_time_days"] = (out["receipt_date"] - out["po_date"]).dt.days.astype(float)
        out = out.drop(columns=["po", "pending"])
    return out


def _vendor_keys(values: pd.Series) -> pd.Series:
    """Vendor ids as trimmed text; numbers read as floats (105.0) become '105'."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str).str.strip().reset_index(drop=True)


def lead_time_stats(
    lead_times: pd.DataFrame, promised_days: float | pd.Series | dict | None = None
) -> pd.DataFrame:
    """Per-vendor lead-time statistics plus a pooled `ALL` row (received POs only).

    `promised_days`: one number for every vendor, or a mapping vendor -> days; vendors without one get
    DEFAULT_PROMISED_DAYS and `promised_assumed` = True.
    """
    done = lead_times.dropna(subset=["lead_time_days"])
    if done.empty:
        raise InputError("purchase-order history has no received orders to measure lead times from")
    pooled = done.assign(vendor=ALL_VENDORS)
    frame = pd.concat([done, pooled], ignore_index=True)
    x = (frame["po_date"] - frame["po_date"].min()).dt.days.astype(float) / 30.0
    frame = frame.assign(x=x, y=frame["lead_time_days"], xy=x * frame["lead_time_days"], xx=x * x)
    g = frame.groupby("vendor", sort=True)
    out = g["y"].agg(n_pos="size", mean_days="mean", std_days="std")
    out["p50_days"] = g["y"].quantile(0.5)
    out["p90_days"] = g["y"].quantile(0.9)
    sums = g[["x", "y", "xy", "xx"]].sum()
    n = out["n_pos"].astype(float)
    var_x = sums["xx"] - sums["x"] ** 2 / n
    cov = sums["xy"] - sums["x"] * sums["y"] / n
    span = (g["po_date"].max() - g["po_date"].min()).dt.days
    measurable = (var_x > 1e-9) & (span >= MIN_TREND_SPAN_DAYS) & (n >= 3)
    out["trend_days_per_30d"] = np.where(measurable, cov / var_x.where(measurable, 1.0), 0.0)
    out["std_days"] = out["std_days"].fillna(0.0)
    promised = _promised(out.index, promised_days)
    out["promised_days"] = promised["days"].to_numpy()
    out["promised_assumed"] = promised["assumed"].to_numpy()
    on_time = frame["y"].to_numpy() <= out["promised_days"].reindex(frame["vendor"]).to_numpy()
    out["on_time_rate"] = pd.Series(on_time, index=frame.index).groupby(frame["vendor"]).mean()
    out["first_po"] = g["po_date"].min()
    out["last_po"] = g["po_date"].max()
    return out.reset_index()


def _promised(vendors: pd.Index, promised: float | pd.Series | dict | None) -> pd.DataFrame:
    if promised is None:
        return pd.DataFrame({"days": DEFAULT_PROMISED_DAYS, "assumed": True}, index=vendors)
    if np.isscalar(promised):
        value = float(promised)
        if not np.isfinite(value) or value <= 0:
            raise InputError(f"promised lead time must be positive days, got {promised}")
        return pd.DataFrame({"days": value, "assumed": False}, index=vendors)
    mapping = pd.Series(promised, dtype=float)
    mapping.index = mapping.index.astype(str).str.strip()
    days = mapping.reindex(vendors)
    return pd.DataFrame({"days": days.fillna(DEFAULT_PROMISED_DAYS), "assumed": days.isna()}, index=vendors)


def open_orders(lead_times: pd.DataFrame, as_of: str | pd.Timestamp) -> pd.DataFrame:
    """POs placed on or before `as_of` and not yet received by then (they belong in inventory position)."""
    as_of = pd.Timestamp(as_of)
    placed = lead_times["po_date"] <= as_of
    pending = lead_times["receipt_date"].isna() | (lead_times["receipt_date"] > as_of)
    return lead_times[placed & pending].reset_index(drop=True)


class LeadTimeSampler:
    """Draw lead times (whole days) from the empirical PO-history distribution, or a constant.

    `fit(lead_times)` keeps each vendor's observed lead times and the pooled set; `sample(shape, rng,
    vendor)` bootstraps from them. `constant(days)` makes a sampler that always returns `days`.
    """

    def __init__(self, vendor: str | None = None):
        self.vendor = vendor

    def fit(self, lead_times: pd.DataFrame) -> LeadTimeSampler:
        done = lead_times.dropna(subset=["lead_time_days"])
        if done.empty:
            raise InputError("purchase-order history has no received orders to sample lead times from")
        self.pooled_ = done["lead_time_days"].to_numpy(dtype=float)
        self.by_vendor_ = {
            str(v): g.to_numpy(dtype=float) for v, g in done.groupby("vendor")["lead_time_days"]
        }
        if self.vendor is not None:
            self.values_ = self._vendor_values(self.vendor)
        else:
            self.values_ = self.pooled_
        return self

    @classmethod
    def constant(cls, days: float) -> LeadTimeSampler:
        if not np.isfinite(days) or days < 1:
            raise InputError(f"lead time must be at least 1 day, got {days}")
        sampler = cls()
        sampler.pooled_ = sampler.values_ = np.array([float(days)])
        sampler.by_vendor_ = {}
        return sampler

    def _vendor_values(self, vendor: str) -> np.ndarray:
        key = str(vendor).strip()
        if key not in self.by_vendor_:
            known = ", ".join(sorted(self.by_vendor_)[:5])
            raise InputError(f"unknown vendor {key!r}: not in the purchase-order history (e.g. {known})")
        return self.by_vendor_[key]

    @property
    def mean_(self) -> float:
        return float(np.mean(self.values_))

    @property
    def std_(self) -> float:
        return float(np.std(self.values_, ddof=1)) if len(self.values_) > 1 else 0.0

    def sample(self, shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Lead times in whole days (at least 1), bootstrapped from the fitted distribution."""
        draws = rng.choice(self.values_, size=shape, replace=True)
        return np.maximum(np.rint(draws), 1).astype(int)
