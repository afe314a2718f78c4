"""Inventory targets: the policy simulation on M5 and the 30,000-SKU timing of KPIs + order advice.

1. M5 (280 item x store daily series; test = the last 28 days): our forecast-driven (s, S) policy at a
   95% cycle service level against the naive policy (reorder point = 28-day moving average x 30 days of
   cover), lead times drawn from the Bibitor purchase-order history (PO date to invoice date, 5,543 POs).
   Forecasts come from forecasting.engine (M5 protocol: series item_id/store_id; exogenous sell_price,
   snap, event_name_1, event_type_1, their future values known), issued at the start of the test and
   refreshed every --refresh-every days with the history known by then. Both policies: same costs, same
   EOQ order-quantity rule, same review (daily), same lead-time draws, same start rule; see
   forecasting/inventory/simulate.py. Our policy sees 364 days of sales before the test (plus the test
   days before each forecast issue): SKUs whose recent zero sales are a stock-out run plan on their
   in-stock rate (forecasting/inventory/censoring.py); the variant "cycle, no censoring" shows the policy
   without that. Targets: fill rate >= 95%, >= 15% fewer stockout days than the naive policy, average
   inventory no higher than its.
2. Scale: KPIs and recommendations (InventoryPlanner.fit + orders) for 30,000 SKUs (real M5 forecasts
   and 182 days of real history, tiled with new ids), target under 10 s.

    .venv/bin/python benchmarks/bench_inventory.py                 # both parts (forecasts are cached)
    .venv/bin/python benchmarks/bench_inventory.py --refresh-every 0 --model snaive --reps 5
    .venv/bin/python benchmarks/bench_inventory.py --skip-sim      # only the timing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting.data import to_long  # noqa: E402
from forecasting.inventory.censoring import CensoringSettings  # noqa: E402
from forecasting.inventory.inputs import InventoryDefaults, resolve_params  # noqa: E402
from forecasting.inventory.leadtime import LeadTimeSampler, po_lead_times  # noqa: E402
from forecasting.inventory.paths import with_residual_sigma  # noqa: E402
from forecasting.inventory.recommend import InventoryPlanner  # noqa: E402
from forecasting.inventory.simulate import (  # noqa: E402
    METRICS,
    SimulationSettings,
    align_forecast,
    demand_matrices,
    simulate,
)

DATA = ROOT.parent / "shared" / "data"
M5 = DATA / "m5"
POS = DATA / "bibitor" / "InvoicePurchases12312016.csv"
SIM_ASSUMED = ("unit_cost", "order_cost", "holding_rate", "pack_size", "moq", "stockout_cost")
CACHE = ROOT / ".stockpilot" / "bench_cache"
TEST = 28
HISTORY = 364  # days of sales before the test the policies see (stock-out runs are judged on them)
EXOG = ["sell_price", "snap", "event_name_1", "event_type_1"]


def load_m5() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The M5 subset in long format and the known future exogenous values (calendar + prices)."""
    raw = pd.read_csv(M5 / "m5_sales_long.csv.gz")
    long, _, _ = to_long(raw, ["item_id", "store_id"], "date", "value", EXOG, "D")
    cal = pd.read_csv(M5 / "calendar.csv", parse_dates=["date"])
    cal = cal[cal["date"] > long["ds"].max() - pd.Timedelta(days=TEST + 120)]
    prices = pd.read_csv(M5 / "sell_prices.csv.gz")
    keys = raw[["item_id", "store_id", "state_id"]].drop_duplicates()
    fut = keys.merge(cal, how="cross")
    fut["snap"] = np.select(
        [fut["state_id"] == s for s in ("CA", "TX", "WI")], [fut[f"snap_{s}"] for s in ("CA", "TX", "WI")]
    )
    fut = fut.merge(prices, on=["store_id", "item_id", "wm_yr_wk"], how="left")
    X = pd.DataFrame({"unique_id": fut["item_id"] + "/" + fut["store_id"], "ds": fut["date"]})
    for col in EXOG:
        X[col] = fut[col].to_numpy()
    X = X.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    X["sell_price"] = X.groupby("unique_id")["sell_price"].ffill()
    return long, X


def engine_forecast(
    long, X, cut: pd.Timestamp, h: int, model: str, use_cache: bool
) -> tuple[pd.DataFrame, float]:
    """forecasting.engine on the history before `cut`, cached by model, cut and horizon."""
    path = CACHE / f"inventory_m5_{model}_{cut:%Y%m%d}_{h}.parquet"
    if use_cache and path.exists():
        return pd.read_parquet(path), 0.0
    from forecasting import engine

    start = time.perf_counter()
    fc = engine.forecast(
        long[long["ds"] < cut], "D", h, model, X[X["ds"] >= cut].reset_index(drop=True)
    ).forecast
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    fc.to_parquet(path)
    return fc, seconds


def run_simulation(args) -> dict:
    long, X = load_m5()
    ids, hist, actual, dates = demand_matrices(long, TEST, HISTORY)
    sampler = LeadTimeSampler().fit(po_lead_times(pd.read_csv(POS)))
    h = TEST + int(sampler.values_.max())  # every forecast covers the test and the longest lead time
    offsets = list(range(0, TEST, args.refresh_every)) if args.refresh_every else [0]
    issues, fc_seconds = [], 0.0
    for offset in offsets:
        cut = dates[offset]
        fc, seconds = engine_forecast(long, X, cut, h, args.model, not args.no_cache)
        fc_seconds += seconds
        issues.append((offset, fc))
        print(
            f"forecast issued {cut:%Y-%m-%d}: {args.model}, {seconds:.0f} s"
            + (" (cached)" if not seconds else "")
        )
    sigma_note = "forecast intervals"
    if args.residual_days:
        # the engine's forecast issued `residual_days` before the test, against what was then sold:
        # its lead-time error sums give the demand sigma (bias and error autocorrelation included)
        cut = dates[0] - pd.Timedelta(days=args.residual_days)
        past, seconds = engine_forecast(long, X, cut, h, args.model, not args.no_cache)
        fc_seconds += seconds
        errors = past[past["ds"] < dates[0]].merge(long[["unique_id", "ds", "y"]], on=["unique_id", "ds"])
        issues = [(p, with_residual_sigma(fc, errors, sampler.mean_)) for p, fc in issues]
        sigma_note = (
            f"lead-time errors of the forecast issued {cut:%Y-%m-%d} ({args.residual_days} days before)"
        )
    first = dates[0]
    prices = long[long["ds"] < first].dropna(subset=["sell_price"]).groupby("unique_id")["sell_price"].last()
    params, assumed = resolve_params(ids, InventoryDefaults(), prices=prices)
    results = {}
    issues = [align_forecast(fc, ids, dates) for _, fc in issues]
    variants = [("cycle", issues, True), ("order_up_to", issues, True)]
    variants.append(("cycle, no censoring", issues, False))
    if len(issues) > 1:
        variants.append(("cycle, one forecast", issues[:1], True))
    for name, used, censoring in variants:
        settings = SimulationSettings(
            service_level=0.95, start=name.split(",")[0], reps=args.reps, seed=args.seed
        )
        settings.censoring = CensoringSettings(alpha=args.censor_alpha) if censoring else None
        start = time.perf_counter()
        r = simulate(actual, hist, used, params, sampler, "D", settings)
        results[name] = {**r.to_dict(), "seconds": time.perf_counter() - start, "per_series": r.per_series}
    print(
        f"\nM5: {len(ids)} series, test {dates[0]:%Y-%m-%d}..{dates[-1]:%Y-%m-%d}, service level 0.95, "
        f"lead time {sampler.mean_:.1f} +- {sampler.std_:.1f} days (Bibitor POs), {args.reps} replications"
    )
    print(f"demand sigma from {sigma_note}")
    print("assumed: " + "; ".join(f"{k} = {v}" for k, v in assumed.items() if k in SIM_ASSUMED))
    for name, r in results.items():
        print(
            f"\n[start: {name}]  forecasts issued at test days {r['settings']['forecast_issues']}, "
            f"series planned on in-stock demand (stock-out runs) {r['settings']['censored_series']}"
        )
        print(f"{'metric':<22}{'policy':>14}{'naive':>14}{'change %':>10}")
        for m in METRICS:
            chg = r["change_pct"][m]
            print(f"{m:<22}{r['policy'][m]:>14,.3f}{r['baseline'][m]:>14,.3f}{chg:>10.1f}")
    main = results["cycle"]
    checks = {
        "fill_rate >= 0.95": main["policy"]["fill_rate"] >= 0.95,
        "stockout days >= 15% fewer": main["change_pct"]["stockout_days"] <= -15.0,
        "avg inventory <= naive": main["policy"]["avg_inventory"] <= main["baseline"]["avg_inventory"],
    }
    print(
        "\ntargets (start: cycle): " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items())
    )
    ps = main["per_series"]
    quiet = hist[:, -28:].sum(axis=1) == 0  # no sales in the 28 days before the test: nothing to go on
    rest = ps[~quiet]
    split = {
        "series_without_recent_sales": int(quiet.sum()),
        "their_share_of_test_demand": float(ps.loc[quiet, "demand"].sum() / ps["demand"].sum()),
        "others": {
            side: {
                "fill_rate": float((rest[f"{side}_fill_rate"] * rest["demand"]).sum() / rest["demand"].sum()),
                "stockout_days": float(rest[f"{side}_stockout_days"].sum()),
                "short_days": float(rest[f"{side}_short_days"].sum()),
                "avg_inventory": float(rest[f"{side}_avg_inventory"].mean()),
            }
            for side in ("policy", "baseline")
        },
    }
    o = split["others"]
    print(
        f"{split['series_without_recent_sales']} series had no sales in the 28 days before the test "
        f"({split['their_share_of_test_demand']:.1%} of test demand); on the other series: fill rate "
        f"{o['policy']['fill_rate']:.3f} vs {o['baseline']['fill_rate']:.3f}, stockout days "
        f"{o['policy']['stockout_days']:.1f} vs {o['baseline']['stockout_days']:.1f}, short days "
        f"{o['policy']['short_days']:.1f} vs {o['baseline']['short_days']:.1f}, avg inventory "
        f"{o['policy']['avg_inventory']:.1f} vs {o['baseline']['avg_inventory']:.1f}"
    )
    worst = ps.assign(extra=ps["policy_stockout_days"] - ps["baseline_stockout_days"]).nlargest(5, "extra")
    print("series where our policy has the most extra stockout days:")
    print(
        worst[["unique_id", "demand", "policy_stockout_days", "baseline_stockout_days"]]
        .round(2)
        .to_string(index=False)
    )
    return {
        "model": args.model,
        "refresh_every": args.refresh_every,
        "sigma": sigma_note,
        "forecast_seconds": fc_seconds,
        "targets": checks,
        "split": split,
        **{name: {k: v for k, v in r.items() if k != "per_series"} for name, r in results.items()},
    }


def run_scale(args) -> dict:
    """Tile real M5 forecasts and history to `args.skus` SKUs and time the per-SKU pass."""
    long, X = load_m5()
    ids, _, _, dates = demand_matrices(long, TEST, 56)
    lead_max = int(po_lead_times(pd.read_csv(POS))["lead_time_days"].max())
    fc, _ = engine_forecast(long, X, dates[0], TEST + lead_max, args.model, not args.no_cache)
    fc = fc[fc["ds"] < dates[0] + pd.Timedelta(days=TEST)]
    hist = long[long["ds"] > long["ds"].max() - pd.Timedelta(days=182)][["unique_id", "ds", "y"]]
    prices = long.dropna(subset=["sell_price"]).groupby("unique_id")["sell_price"].last()
    copies = -(-args.skus // len(ids))
    fc_n = pd.concat(
        [fc.assign(unique_id=fc["unique_id"] + f"#{c}") for c in range(copies)], ignore_index=True
    )
    hist_n = pd.concat(
        [hist.assign(unique_id=hist["unique_id"] + f"#{c}") for c in range(copies)], ignore_index=True
    )
    keep = pd.Index(sorted(fc_n["unique_id"].unique())[: args.skus])
    fc_n = fc_n[fc_n["unique_id"].isin(keep)].reset_index(drop=True)
    hist_n = hist_n[hist_n["unique_id"].isin(keep)].sort_values(["unique_id", "ds"]).reset_index(drop=True)
    price_n = pd.Series(prices.reindex(keep.str.split("#").str[0]).to_numpy(), index=keep)
    times = []
    for _ in range(args.timing_runs):
        start = time.perf_counter()
        planner = InventoryPlanner().fit(fc_n, "D", history=hist_n, prices=price_n)
        orders = planner.orders()
        times.append(time.perf_counter() - start)
    best, median = min(times), float(np.median(times))
    print(
        f"\nscale: {len(keep):,} SKUs ({len(fc_n):,} forecast rows, {len(hist_n):,} history rows): "
        f"KPIs + order advice in {median:.2f} s (median of {len(times)}; best {best:.2f} s), "
        f"{len(orders):,} SKUs to order now; target < 10 s: {'PASS' if median < 10 else 'FAIL'}"
    )
    return {"skus": len(keep), "seconds_median": median, "seconds_best": best, "target_pass": median < 10}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto", help="engine model for the forecasts (default auto)")
    parser.add_argument(
        "--refresh-every", type=int, default=7, help="re-forecast every N test days (0: once)"
    )
    parser.add_argument(
        "--residual-days",
        type=int,
        default=28,
        help="sigma from a forecast issued this many days before the test (0: from the intervals)",
    )
    parser.add_argument(
        "--censor-alpha",
        type=float,
        default=CensoringSettings.alpha,
        help="a zero-sales run with probability p0^k below this is a stock-out (censored demand)",
    )
    parser.add_argument("--reps", type=int, default=20, help="replications of lead-time and start draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skus", type=int, default=30_000)
    parser.add_argument("--timing-runs", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="recompute the engine forecasts")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    out = {}
    if not args.skip_sim:
        out["simulation"] = run_simulation(args)
    if not args.skip_scale:
        out["scale"] = run_scale(args)
    if args.json:
        from api.cli_common import to_jsonable

        args.json.write_text(json.dumps(to_jsonable(out), indent=2))


if __name__ == "__main__":
    main()
