"""Per-SKU inventory inputs (stock, open POs, costs, lead times, pack sizes) and documented defaults.

A stock/parameter table has the demand table's id columns plus any of PARAM_COLUMNS. A column that is
absent is filled with its default for every SKU and reported as assumed; a column that is present must
be complete and valid (a missing cost or a negative stock is an error, not a silent default).

Defaults (see InventoryDefaults): order cost 10 per order, holding-cost rate 25% of unit cost per year,
unit cost = price x (1 - 30% margin) where prices are known (else 1.0 per unit, price = cost / 0.7),
stockout cost = the lost margin (price - unit cost) per unit short, lead time 14 +- 3 days (or the
purchase-order history's, pooled or per vendor), pack size 1, no minimum order quantity, no backorders,
no open POs, and on-hand stock at the policy's average level (safety stock + half an order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.leadtime import ALL_VENDORS

NUMERIC_PARAMS = (
    "on_hand",
    "backorders",
    "unit_cost",
    "price",
    "order_cost",
    "holding_rate",
    "stockout_cost",
    "lead_time_days",
    "lead_time_std_days",
    "pack_size",
    "moq",
    "service_level",
)
PARAM_COLUMNS = (*NUMERIC_PARAMS, "vendor")
POSITIVE = ("unit_cost", "price", "order_cost", "holding_rate", "pack_size", "lead_time_days")
NON_NEGATIVE = ("on_hand", "backorders", "stockout_cost", "lead_time_std_days", "moq")


@dataclass
class InventoryDefaults:
    """Values used where the inputs do not say; `given` names those the user set explicitly."""

    order_cost: float = 10.0
    holding_rate: float = 0.25
    unit_cost: float | None = None
    margin: float = 0.30
    stockout_cost: float | None = None
    lead_time_days: float = 14.0
    lead_time_std_days: float = 3.0
    pack_size: float = 1.0
    moq: float = 0.0
    backorders: float = 0.0
    given: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name in ("order_cost", "holding_rate", "lead_time_days", "pack_size"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)}")
        for name in ("lead_time_std_days", "moq", "backorders"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name.replace('_', ' ')} must not be negative, got {getattr(self, name)}")
        if self.unit_cost is not None and not self.unit_cost > 0:
            raise InputError(f"unit cost must be positive, got {self.unit_cost}")
        if self.stockout_cost is not None and not self.stockout_cost >= 0:
            raise InputError(f"stockout cost must not be negative, got {self.stockout_cost}")
        if not 0 <= self.margin < 1:
            raise InputError(f"margin must be in [0, 1), got {self.margin}")

    def describe(self) -> dict[str, str | float]:
        """The defaults as a plain dict, for 'assumed' notes in outputs."""
        out: dict[str, str | float] = {}
        for f in fields(self):
            if f.name == "given":
                continue
            value = getattr(self, f.name)
            out[f.name] = value if value is not None else _DERIVED[f.name]
        out["on_hand"] = "safety stock + half an order quantity (average stock under the policy)"
        out["open_po"] = 0.0
        return out


_DERIVED = {
    "unit_cost": "price x (1 - margin), or 1.0 without prices",
    "stockout_cost": "price - unit cost (lost margin per unit short)",
}


def read_params(table: pd.DataFrame, id_cols: list[str]) -> pd.DataFrame:
    """A user stock/parameter table -> frame indexed by unique_id with the PARAM_COLUMNS it has."""
    missing = [c for c in id_cols if c not in table.columns]
    if missing:
        raise InputError(f"stock table is missing id column(s): {', '.join(missing)}")
    uid = _uid(table, id_cols)
    if uid.duplicated().any():
        raise InputError(f"stock table has more than one row for {uid[uid.duplicated()].iloc[0]!r}")
    cols = [c for c in PARAM_COLUMNS if c in table.columns]
    if not cols:
        raise InputError(f"stock table has none of the columns {', '.join(PARAM_COLUMNS)}")
    out = table[cols].copy()
    out.index = pd.Index(uid.to_numpy(), name="unique_id")
    for col in cols:
        if col == "vendor":
            out[col] = out[col].astype("string").str.strip().str.replace(r"\.0$", "", regex=True)
            continue
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
        if bad.any():
            raise InputError(f"stock table column {col!r} must be numeric, found {out[col][bad].iloc[0]!r}")
        out[col] = values.astype(float)
    return out


def read_open_orders(table: pd.DataFrame, id_cols: list[str], qty_col: str = "quantity") -> pd.Series:
    """Open purchase orders (id columns + quantity) -> open quantity per unique_id.

    A purchase-order extract with a receiving date column (ReceivingDate or receipt_date) may be given
    as is: only its rows without a receiving date are still open.
    """
    if qty_col not in table.columns and "Quantity" in table.columns:
        qty_col = "Quantity"
    missing = [c for c in [*id_cols, qty_col] if c not in table.columns]
    if missing:
        raise InputError(f"open purchase orders are missing column(s): {', '.join(missing)}")
    for col in ("ReceivingDate", "receipt_date"):
        if col in table.columns:
            received = table[col].notna() & (table[col].astype(str).str.strip() != "")
            table = table[~received]
            break
    if table.empty:
        return pd.Series(dtype=float, name="open_po")
    qty = pd.to_numeric(table[qty_col], errors="coerce")
    if qty.isna().any():
        raise InputError(f"open purchase orders: column {qty_col!r} has empty or non-numeric quantities")
    if (qty < 0).any():
        raise InputError(f"open purchase orders: negative quantity {float(qty[qty < 0].iloc[0]):g}")
    return qty.groupby(_uid(table, id_cols).to_numpy()).sum().rename("open_po")


def _uid(table: pd.DataFrame, id_cols: list[str]) -> pd.Series:
    if len(id_cols) == 1:
        return table[id_cols[0]].astype(str).reset_index(drop=True)
    return table[id_cols].astype(str).agg("/".join, axis=1).reset_index(drop=True)


def resolve_params(
    skus: pd.Index,
    defaults: InventoryDefaults,
    table: pd.DataFrame | None = None,
    prices: pd.Series | None = None,
    open_po: pd.Series | None = None,
    vendor_stats: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, str | float]]:
    """Complete per-SKU parameters for `skus` and the defaults that were assumed.

    Returns a frame indexed by unique_id (NUMERIC_PARAMS except on_hand/service_level may be NaN there,
    meaning 'derive later'), plus `open_po`, `vendor` and `assumed` (comma-separated assumed fields).
    `prices` are known selling prices per SKU (e.g. the last sell_price); `vendor_stats` is
    lead_time_stats() output, used for SKUs with a vendor, and its ALL row for the others.
    """
    n = len(skus)
    out = pd.DataFrame(index=pd.Index(skus, name="unique_id"))
    notes: dict[str, str | float] = {}
    table = table.reindex(skus) if table is not None else pd.DataFrame(index=skus)
    present = set(table.columns)
    given = defaults.given

    def take(col: str) -> pd.Series | None:
        if col not in present:
            return None
        values = table[col]
        if values.isna().any():
            first = values.index[values.isna()][0]
            raise InputError(
                f"{col} is missing for {int(values.isna().sum())} SKU(s), e.g. {first!r}: "
                f"give it for every SKU or drop the column to use the default"
            )
        return values.astype(float)

    flags: dict[str, np.ndarray] = {}

    def put(col: str, values: pd.Series | float, flag: bool | np.ndarray, note: str | float | None = None):
        out[col] = values if not np.isscalar(values) else float(values)
        flags[col] = np.broadcast_to(np.asarray(flag, dtype=bool), (n,))
        if np.any(flag) and note is not None:
            notes[col] = note

    # stock position
    on_hand = take("on_hand")
    put("on_hand", on_hand if on_hand is not None else np.nan, on_hand is None)
    if on_hand is None:
        notes["on_hand"] = defaults.describe()["on_hand"]
    bo = take("backorders")
    put("backorders", bo if bo is not None else defaults.backorders, bo is None, defaults.backorders)
    if open_po is not None:
        out["open_po"] = open_po.reindex(skus).fillna(0.0).to_numpy()
        flags["open_po"] = np.zeros(n, dtype=bool)
    else:
        put("open_po", 0.0, True, 0.0)
    # prices and costs
    price = take("price")
    if price is None and prices is not None:
        known = prices.reindex(skus)
        price = known if known.notna().all() else None
        if price is None and known.notna().any():
            first = known.index[known.isna()][0]
            raise InputError(f"price is missing for {int(known.isna().sum())} SKU(s), e.g. {first!r}")
    cost = take("unit_cost")
    keep = 1.0 - defaults.margin
    if cost is None:
        if defaults.unit_cost is not None:
            cost_value: pd.Series | float = defaults.unit_cost
        elif price is not None:
            cost_value = price * keep
        else:
            cost_value = 1.0
        put("unit_cost", cost_value, "unit_cost" not in given, _DERIVED["unit_cost"])
        cost = out["unit_cost"]
    else:
        put("unit_cost", cost, False)
    if price is None:
        put("price", cost / keep if keep > 0 else cost, True, "unit cost / (1 - margin)")
    else:
        put("price", price, False)
    for col in ("order_cost", "holding_rate", "pack_size", "moq"):
        values = take(col)
        default = getattr(defaults, col)
        put(col, values if values is not None else default, values is None and col not in given, default)
    so = take("stockout_cost")
    if so is not None:
        put("stockout_cost", so, False)
    elif defaults.stockout_cost is not None:
        so_flag = "stockout_cost" not in given
        put("stockout_cost", defaults.stockout_cost, so_flag, defaults.stockout_cost)
    else:
        lost_margin = (out["price"] - out["unit_cost"]).clip(lower=0.0)
        put("stockout_cost", lost_margin, True, _DERIVED["stockout_cost"])
    # lead times: table > vendor history > pooled history > defaults
    out["vendor"] = table["vendor"].to_numpy() if "vendor" in present else pd.NA
    lt, lt_sd = take("lead_time_days"), take("lead_time_std_days")
    lt_values = pd.Series(defaults.lead_time_days, index=skus, dtype=float)
    sd_values = pd.Series(defaults.lead_time_std_days, index=skus, dtype=float)
    lt_flag = np.full(n, "lead_time_days" not in given)
    sd_flag = np.full(n, "lead_time_std_days" not in given)
    if vendor_stats is not None:
        stats = vendor_stats.set_index("vendor")
        vendors = out["vendor"].astype("string")
        known = vendors.notna().to_numpy()
        unknown = known & ~vendors.isin(stats.index).to_numpy()
        if unknown.any():
            first = vendors[unknown].iloc[0]
            raise InputError(
                f"unknown vendor {first!r} for SKU {vendors.index[unknown][0]!r}: "
                "not in the purchase-order history"
            )
        key = vendors.fillna(ALL_VENDORS)
        use = known | ("lead_time_days" not in given)
        lt_values = lt_values.where(~use, stats["mean_days"].reindex(key).to_numpy())
        sd_values = sd_values.where(~use, stats["std_days"].reindex(key).to_numpy())
        lt_flag &= ~use
        sd_flag &= ~use
        if (use & ~known).any():
            notes["lead_time_days"] = "pooled purchase-order history (SKUs without a vendor)"
    elif "vendor" in present and out["vendor"].notna().any():
        raise InputError(
            "the stock table names vendors but no purchase-order history was given (--po-history)"
        )
    if lt is not None:
        lt_values, lt_flag = lt, np.zeros(n, dtype=bool)
    if lt_sd is not None:
        sd_values, sd_flag = lt_sd, np.zeros(n, dtype=bool)
    put("lead_time_days", lt_values, lt_flag, defaults.lead_time_days)
    put("lead_time_std_days", sd_values, sd_flag, defaults.lead_time_std_days)
    sl = take("service_level")
    out["service_level"] = sl if sl is not None else np.nan
    _validate(out)
    names = np.array(list(flags))
    matrix = np.column_stack([flags[c] for c in names])
    rows, which = np.unique(matrix, axis=0, return_inverse=True)
    labels = np.array([",".join(names[row]) for row in rows], dtype=object)
    out["assumed"] = labels[which.ravel()]
    return out, notes


def _validate(params: pd.DataFrame) -> None:
    for col in POSITIVE:
        bad = params[col] <= 0
        if bad.any():
            raise InputError(
                f"{col} must be positive, got {params.loc[bad, col].iloc[0]:g} for {bad.idxmax()!r}"
            )
    for col in (*NON_NEGATIVE, "open_po"):
        values = params[col]
        bad = values < 0
        if bad.any():
            hint = "; record shortages as backorders" if col == "on_hand" else ""
            raise InputError(
                f"{col} is negative for {int(bad.sum())} SKU(s), e.g. {bad.idxmax()!r} "
                f"({values[bad].iloc[0]:g}){hint}"
            )
    sl = params["service_level"].dropna()
    if ((sl <= 0) | (sl >= 1)).any():
        raise InputError("service_level in the stock table must be between 0 and 1 (e.g. 0.95)")
