"""Per-SKU inventory facts and order advice from a forecast table (the contract), all SKUs at once.

For every SKU (unique_id; a location is one of its id parts): lead-time demand and its std from the
forecast path and its interval, safety stock for the cycle service level (z * sqrt(L sigma_d^2 +
d^2 sigma_L^2)) and for a fill rate, reorder point, EOQ (capped at `max_cover_days` of demand and
rounded to pack / MOQ), order-up-to level, order now (quantity, latest order date) from the inventory
position, days of cover, stockout risk before the next delivery, turnover, holding cost, ABC/XYZ.
With a sales history, SKUs whose recent zero sales are a stock-out run (forecasting/inventory/censoring)
plan on at least their in-stock demand rate (`stockout_run` = True in the table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.errors import InputError
from forecasting.inventory.censoring import (
    CensoringSettings,
    censored_demand,
    history_matrix,
    unconstrain,
)
from forecasting.inventory.classes import (
    CLASS_SERVICE_LEVELS,
    abc_classes,
    demand_stats,
    service_levels,
    xyz_classes,
)
from forecasting.inventory.inputs import InventoryDefaults, resolve_params
from forecasting.inventory.paths import ForecastPaths, cum_at, first_passage, forecast_paths, period_days
from forecasting.inventory.policy import (
    eoq,
    round_to_pack,
    safety_stock_fill_rate,
    stockout_probability,
    z_value,
)

MAX_DAYS = 365.0  # days of cover and days to reorder are capped here ("a year or more")
KPI_COLUMNS = [
    "unique_id",
    "abc",
    "xyz",
    "service_level",
    "demand_per_day",
    "annual_demand",
    "lead_time_days",
    "lead_time_std_days",
    "ltd_mean",
    "ltd_std",
    "safety_stock",
    "safety_stock_csl",
    "safety_stock_fill_rate",
    "reorder_point",
    "eoq",
    "order_up_to",
    "on_hand",
    "open_po",
    "backorders",
    "inventory_position",
    "days_of_cover",
    "stockout_prob",
    "avg_inventory",
    "turnover",
    "holding_cost",
    "ordering_cost",
    "unit_cost",
    "price",
    "status",
    "stockout_run",
    "assumed",
]
ORDER_COLUMNS = [
    "unique_id",
    "abc",
    "status",
    "order_qty",
    "order_value",
    "latest_order_date",
    "days_to_order",
    "inventory_position",
    "reorder_point",
    "order_up_to",
    "days_of_cover",
    "stockout_prob",
    "lead_time_days",
    "pack_size",
    "moq",
    "vendor",
    "assumed",
]


@dataclass
class PolicySettings:
    """How targets are set. `service_level` (one cycle service level for all) overrides the per-class
    targets; `fill_rate` makes the reorder point use the fill-rate safety stock instead; `censoring`
    (None: off) finds stock-out runs in the history and plans those SKUs on their in-stock demand."""

    service_level: float | None = None
    class_levels: dict[str, float] = field(default_factory=lambda: dict(CLASS_SERVICE_LEVELS))
    fill_rate: float | None = None
    abc_method: str = "pareto"
    max_cover_days: float = 90.0
    interval_level: float = 0.90
    censoring: CensoringSettings | None = field(default_factory=CensoringSettings)

    def __post_init__(self) -> None:
        if self.service_level is not None:
            z_value(self.service_level)
        if self.fill_rate is not None and not 0 < self.fill_rate < 1:
            raise InputError("fill rate must be between 0 and 1 (e.g. 0.98)")
        if not self.max_cover_days > 0:
            raise InputError(f"max cover days must be positive, got {self.max_cover_days}")


class InventoryPlanner:
    """Compute the inventory facts of every SKU in one vectorised pass.

    `fit(forecast, freq, ...)` sets `table_` (one row per SKU, KPI_COLUMNS plus order columns) and
    `assumed_` (defaults that were used, by field); `orders()` is the order advice, most urgent first.
    """

    def __init__(self, settings: PolicySettings | None = None, defaults: InventoryDefaults | None = None):
        self.settings = settings or PolicySettings()
        self.defaults = defaults or InventoryDefaults()

    def fit(
        self,
        forecast: pd.DataFrame,
        freq: str,
        history: pd.DataFrame | None = None,
        stock: pd.DataFrame | None = None,
        open_po: pd.Series | None = None,
        prices: pd.Series | None = None,
        vendor_stats: pd.DataFrame | None = None,
        location_part: int | None = None,
    ) -> InventoryPlanner:
        """`stock` is inputs.read_params() output; `history` the long demand table (for ABC/XYZ)."""
        paths = forecast_paths(forecast, self.settings.interval_level)
        if not np.any(paths.mean > 0):
            raise InputError("every SKU has zero forecast demand: check the target column and the forecast")
        params, assumed = resolve_params(paths.ids, self.defaults, stock, prices, open_po, vendor_stats)
        self.stockout_runs_ = np.zeros(len(paths.ids), dtype=bool)
        c = self.settings.censoring
        if c is not None and history is not None and len(history):
            pdays = period_days(freq)
            sales = history_matrix(history, paths.ids, c.periods(c.window_days, pdays))
            found = censored_demand(sales, c, pdays)
            paths = unconstrain(paths, found)
            self.stockout_runs_ = found.flag
        self.paths_ = paths
        self.assumed_ = assumed
        self.table_ = self._compute(paths, params, freq, history, location_part)
        return self

    def _compute(
        self,
        paths: ForecastPaths,
        params: pd.DataFrame,
        freq: str,
        history: pd.DataFrame | None,
        location_part: int | None,
    ) -> pd.DataFrame:
        s = self.settings
        pdays = period_days(freq)
        per_year = 365.25 / pdays
        cum = paths.cumulative()
        rate = paths.mean.mean(axis=1)  # mean demand per period over the horizon
        tail = rate
        active = (rate > 0) | (paths.sigma.max(axis=1) > 0)  # some demand expected or possible
        lt = params["lead_time_days"].to_numpy() / pdays
        lt_sd = params["lead_time_std_days"].to_numpy() / pdays
        ltd = cum_at(cum, lt, tail)
        d_lt = np.where(lt > 0, ltd / lt, 0.0)
        var = np.concatenate([np.zeros((len(rate), 1)), np.cumsum(paths.sigma**2, axis=1)], axis=1)
        tail_var = (paths.sigma**2).mean(axis=1)
        ltd_std = np.sqrt(cum_at(var, lt, tail_var) + d_lt**2 * lt_sd**2)
        annual = rate * per_year

        ids = paths.ids
        if history is not None and len(history):
            stats = demand_stats(history, ids, pdays)
            units = stats["annual_units"].fillna(pd.Series(annual, index=ids))
            cv = stats["cv"]
        else:
            units = pd.Series(annual, index=ids)
            sig = paths.sigma.mean(axis=1)
            cv = pd.Series(np.where(rate > 0, sig / np.where(rate > 0, rate, 1.0), np.inf), index=ids)
        abc = abc_classes(units * params["price"], s.abc_method)
        xyz = xyz_classes(cv)
        if s.service_level is not None:
            target = pd.Series(s.service_level, index=ids)
        else:
            target = service_levels(abc, s.class_levels)
        target = params["service_level"].fillna(target).to_numpy()

        unit_cost = params["unit_cost"].to_numpy()
        hold = unit_cost * params["holding_rate"].to_numpy()
        pack, moq = params["pack_size"].to_numpy(), params["moq"].to_numpy()
        q_raw, _ = eoq(annual, params["order_cost"].to_numpy(), hold)
        q_cap = s.max_cover_days / pdays * rate
        q = round_to_pack(np.minimum(q_raw, np.maximum(q_cap, 1e-9)), pack, moq)
        q = np.where(active, np.maximum(q, pack), 0.0)
        ss_csl = z_value(target) * ltd_std
        fr_target = s.fill_rate if s.fill_rate is not None else target
        ss_fr = safety_stock_fill_rate(fr_target, q, ltd_std)
        ss = ss_fr if s.fill_rate is not None else ss_csl
        rop = ltd + ss
        up_to = rop + q
        avg_inv = ss + q / 2.0

        on_hand = params["on_hand"].to_numpy()
        on_hand = np.where(np.isnan(on_hand), np.ceil(avg_inv), on_hand)
        backorders = params["backorders"].to_numpy()
        open_po = params["open_po"].to_numpy()
        position = on_hand + open_po - backorders
        need = (position <= rop) & active
        order_qty = np.where(need, round_to_pack(np.maximum(up_to - position, 0.0), pack, moq), 0.0)
        cap = MAX_DAYS / pdays
        to_order = first_passage(cum, position - rop, tail, cap) * pdays
        to_order = np.where(need, 0.0, to_order)
        net = np.maximum(on_hand - backorders, 0.0)
        cover = first_passage(cum, net, tail, cap) * pdays
        risk = stockout_probability(position, ltd, ltd_std)
        start = paths.start.reindex(ids).to_numpy()
        order_date = pd.to_datetime(start) + pd.to_timedelta(np.floor(to_order), unit="D")

        status = np.where(
            ~active,
            "no demand",
            np.where(need, "order now", np.where(cover > s.max_cover_days + lt * pdays, "excess", "ok")),
        )
        table = pd.DataFrame(
            {
                "unique_id": ids.to_numpy(),
                "abc": abc.to_numpy(),
                "xyz": xyz.to_numpy(),
                "service_level": target,
                "demand_per_day": rate / pdays,
                "annual_demand": annual,
                "lead_time_days": params["lead_time_days"].to_numpy(),
                "lead_time_std_days": params["lead_time_std_days"].to_numpy(),
                "ltd_mean": ltd,
                "ltd_std": ltd_std,
                "safety_stock": ss,
                "safety_stock_csl": ss_csl,
                "safety_stock_fill_rate": ss_fr,
                "reorder_point": rop,
                "eoq": q,
                "order_up_to": up_to,
                "on_hand": on_hand,
                "open_po": open_po,
                "backorders": backorders,
                "inventory_position": position,
                "days_of_cover": cover,
                "stockout_prob": risk,
                "avg_inventory": avg_inv,
                "turnover": np.where(avg_inv > 0, annual / np.where(avg_inv > 0, avg_inv, 1.0), 0.0),
                "holding_cost": avg_inv * hold,
                "ordering_cost": np.where(q > 0, annual / np.where(q > 0, q, 1.0), 0.0)
                * params["order_cost"].to_numpy(),
                "unit_cost": unit_cost,
                "price": params["price"].to_numpy(),
                "status": status,
                "stockout_run": self.stockout_runs_,
                "assumed": params["assumed"].to_numpy(),
                "order_qty": order_qty,
                "order_value": order_qty * unit_cost,
                "latest_order_date": order_date,
                "days_to_order": to_order,
                "pack_size": pack,
                "moq": moq,
                "vendor": params["vendor"].astype("string").fillna("").to_numpy(),
                "eoq_unrounded": q_raw,
            }
        )
        if location_part is not None:
            parts = table["unique_id"].str.split("/", expand=True)
            if location_part >= parts.shape[1]:
                raise InputError("the location column is not part of the series ids")
            table.insert(1, "location", parts[location_part].to_numpy())
        return table

    @property
    def kpis_(self) -> pd.DataFrame:
        cols = [c for c in KPI_COLUMNS if c in self.table_.columns]
        if "location" in self.table_.columns:
            cols.insert(1, "location")
        return self.table_[cols]

    def orders(self, include_all: bool = False) -> pd.DataFrame:
        """Order advice: SKUs to order now, then by latest order date (all SKUs with `include_all`)."""
        cols = [c for c in ORDER_COLUMNS if c in self.table_.columns]
        if "location" in self.table_.columns:
            cols.insert(1, "location")
        out = self.table_[cols]
        if not include_all:
            out = out[out["status"] == "order now"]
        return out.sort_values(["days_to_order", "stockout_prob"], ascending=[True, False]).reset_index(
            drop=True
        )

    def summary(self) -> dict:
        """Headline totals for JSON output and reports."""
        t = self.table_
        value = t["on_hand"] * t["unit_cost"]
        out = {
            "skus": len(t),
            "to_order_now": int((t["status"] == "order now").sum()),
            "order_value_now": float(t["order_value"].sum()),
            "stock_value": float(value.sum()),
            "safety_stock_value": float((t["safety_stock"] * t["unit_cost"]).sum()),
            "annual_holding_cost": float(t["holding_cost"].sum()),
            "annual_ordering_cost": float(t["ordering_cost"].sum()),
            "mean_stockout_prob": float(t["stockout_prob"].mean()),
            "status": t["status"].value_counts().to_dict(),
            "stockout_runs": int(t["stockout_run"].sum()),
            "abc": t["abc"].value_counts().sort_index().to_dict(),
            "xyz": t["xyz"].value_counts().sort_index().to_dict(),
        }
        if "location" in t.columns:
            out["by_location"] = (
                t.groupby("location")
                .agg(
                    skus=("unique_id", "size"),
                    to_order_now=("status", lambda s: int((s == "order now").sum())),
                )
                .reset_index()
                .to_dict(orient="records")
            )
        return out
