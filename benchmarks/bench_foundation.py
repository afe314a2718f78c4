"""Foundation benchmark: `--model auto` against its peers on real retail data, and speed.

    .venv/bin/python benchmarks/bench_foundation.py              # all three parts
    .venv/bin/python benchmarks/bench_foundation.py --part m5 --json

Parts:
- m5: 280 daily item x store series, last 28 days held out, known-future prices/events/SNAP from the
  official calendar and price files. Level-12 WRMSSE of auto and of peers run side by side: seasonal
  naive, 28-day moving average, statsforecast AutoETS, CrostonSBA and TSB, a default mlforecast LightGBM.
  Also auto's 90% interval coverage. Target: auto below every peer, coverage 85-95%.
- carparts: 2,674 monthly spare parts, last 12 months held out. Mean MAE and mean RMSSE of auto and of
  statsforecast Croston, SBA and TSB. Target: auto beats the best of them on both.
- speed: store item demand (500 series x 1,826 days) through the real CLI: a 3-window, 90-day backtest of
  lgbm, ets and snaive (target under 180 s, peak memory under 4 GB), and `stockpilot forecast --model
  auto --horizon 90` (target under 90 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from m5data import DefaultLGBM, coverage, load_m5, official_future, peak_rss_gb, split, wrmsse

from forecasting import engine
from forecasting.data import to_long
from forecasting.metrics import series_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def statsforecast_peers(train: pd.DataFrame, freq: str, h: int, season: int, models: dict) -> pd.DataFrame:
    """Forecasts of statsforecast models with their defaults: one column per peer name."""
    from statsforecast import StatsForecast

    sf = StatsForecast(models=list(models.values()), freq=freq, n_jobs=1)
    fc = sf.forecast(df=train[["unique_id", "ds", "y"]], h=h)
    aliases = {str(m): name for name, m in models.items()}
    return fc.rename(columns=aliases)


def bench_m5(threads: int) -> dict:
    from statsforecast.models import TSB as TSBModel
    from statsforecast.models import AutoETS, CrostonSBA, SeasonalNaive, WindowAverage

    df = load_m5()
    train, test = split(df)
    future = official_future(train)
    res: dict = {"series": int(df["unique_id"].nunique()), "test_days": 28}
    t0 = time.perf_counter()
    result = engine.forecast(train, "D", 28, "auto", X_df=future)
    res["auto_seconds"] = round(time.perf_counter() - t0, 1)
    fc = result.forecast
    scores = {"auto": wrmsse(train, test, fc)}
    res["auto_coverage90"] = coverage(test, fc)
    res["auto_choices"] = fc.drop_duplicates("unique_id")["model"].value_counts().to_dict()
    for name, model in result.model.models_.items():
        scores[f"auto component {name}"] = wrmsse(train, test, model.predict(28, future))
    t0 = time.perf_counter()
    peers = statsforecast_peers(
        train,
        "D",
        28,
        7,
        {
            "seasonal naive": SeasonalNaive(season_length=7),
            "moving average 28": WindowAverage(window_size=28),
            "AutoETS": AutoETS(season_length=7),
            "CrostonSBA": CrostonSBA(),
            "TSB": TSBModel(alpha_d=0.1, alpha_p=0.1),
        },
    )
    for name in ("seasonal naive", "moving average 28", "AutoETS", "CrostonSBA", "TSB"):
        scores[name] = wrmsse(train, test, peers.rename(columns={name: "yhat"}))
    lgbm = DefaultLGBM(threads).fit(train, "D").predict(28, future)
    scores["mlforecast LightGBM (default)"] = wrmsse(train, test, lgbm)
    res["peers_seconds"] = round(time.perf_counter() - t0, 1)
    res["wrmsse"] = {k: round(v, 4) for k, v in scores.items()}
    peer_scores = [v for k, v in scores.items() if k != "auto" and not k.startswith("auto ")]
    res["targets"] = {
        "auto_beats_every_peer": scores["auto"] < min(peer_scores),
        "coverage_85_95": 0.85 <= res["auto_coverage90"] <= 0.95,
    }
    res["peak_rss_gb"] = round(peak_rss_gb(), 2)
    return res


def bench_carparts() -> dict:
    from statsforecast.models import TSB as TSBModel
    from statsforecast.models import CrostonClassic, CrostonSBA

    raw = pd.read_csv(DATA / "carparts" / "carparts_long.csv.gz")
    df, report, freq = to_long(raw, ["part_id"], "month", "sales", freq="MS")
    end = df["ds"].max() - pd.DateOffset(months=12)
    train, test = df[df["ds"] <= end], df[df["ds"] > end]
    train = train[train["unique_id"].isin(test["unique_id"].unique())]
    res: dict = {"series": int(train["unique_id"].nunique()), "test_months": 12}
    t0 = time.perf_counter()
    result = engine.forecast(train, freq, 12, "auto")
    res["auto_seconds"] = round(time.perf_counter() - t0, 1)
    forecasts = {"auto": result.forecast}
    peers = statsforecast_peers(
        train,
        freq,
        12,
        12,
        {"Croston": CrostonClassic(), "SBA": CrostonSBA(), "TSB": TSBModel(alpha_d=0.1, alpha_p=0.1)},
    )
    for name in ("Croston", "SBA", "TSB"):
        forecasts[name] = peers.rename(columns={name: "yhat"})[["unique_id", "ds", "yhat"]]
    table = {}
    for name, fc in forecasts.items():
        merged = test[["unique_id", "ds", "y"]].merge(fc, on=["unique_id", "ds"], how="left")
        merged["cutoff"] = end
        ps = series_metrics(merged, train, 12)
        table[name] = {"mae": round(float(ps["mae"].mean()), 4), "rmsse": round(float(ps["rmsse"].mean()), 4)}
    res["metrics"] = table
    res["auto_coverage90"] = coverage(test, result.forecast)
    best = {k: min(table[p][k] for p in ("Croston", "SBA", "TSB")) for k in ("mae", "rmsse")}
    res["targets"] = {
        "auto_beats_best_mae": table["auto"]["mae"] < best["mae"],
        "auto_beats_best_rmsse": table["auto"]["rmsse"] < best["rmsse"],
    }
    return res


def _run_cli(args: list[str]) -> tuple[float, float, str]:
    """Run `stockpilot ARGS`; (wall seconds, peak RSS of the child in GB, stdout)."""
    exe = str(Path(sys.executable).with_name("stockpilot"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stockpilot {args[0]} failed: {proc.stderr.strip()[-500:]}")
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024**2
    return seconds, peak, proc.stdout


def bench_speed() -> dict:
    path = DATA / "store_item_demand" / "train.csv.gz"
    common = ["--id-cols", "store,item", "--date-col", "date", "--target-col", "sales", "--freq", "D"]
    res: dict = {"series": 500, "days": 1826}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STOCKPILOT_HOME"] = tmp
        models = ["--model", "lgbm,ets,snaive"]
        seconds, peak, _ = _run_cli(
            ["backtest", str(path), *common, "--horizon", "90", "--windows", "3", *models]
            + ["--output", f"{tmp}/metrics.csv"]
        )
        res["backtest_seconds"] = round(seconds, 1)
        res["backtest_peak_rss_gb"] = round(peak, 2)
        res["backtest_metrics"] = pd.read_csv(f"{tmp}/metrics.csv")[["model", "rmsse", "seconds"]].to_dict(
            orient="records"
        )
        seconds, peak, _ = _run_cli(
            ["forecast", str(path), *common, "--horizon", "90", "--model", "auto"]
            + ["--output", f"{tmp}/fc.csv"]
        )
        res["forecast_auto_seconds"] = round(seconds, 1)
        res["forecast_auto_peak_rss_gb"] = round(peak, 2)
    res["targets"] = {
        "backtest_under_180s": res["backtest_seconds"] < 180,
        "backtest_under_4gb": res["backtest_peak_rss_gb"] < 4,
        "forecast_auto_under_90s": res["forecast_auto_seconds"] < 90,
    }
    return res


def show(name: str, res: dict) -> None:
    print(f"== {name}")
    for key, value in res.items():
        if key == "targets":
            for target, ok in value.items():
                print(f"  target {target:<32} {'PASS' if ok else 'FAIL'}")
        elif isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"    {k:<34} {v}")
        else:
            print(f"  {key:<36} {value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["m5", "carparts", "speed", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    parts = ["m5", "carparts", "speed"] if args.part == "all" else [args.part]
    runners = {"m5": lambda: bench_m5(args.threads), "carparts": bench_carparts, "speed": bench_speed}
    results = {}
    for part in parts:
        results[part] = runners[part]()
        if not args.json:
            show(part, results[part])
    if args.json:
        plain = lambda v: v.item() if isinstance(v, np.generic) else str(v)  # noqa: E731
        print(json.dumps(results, indent=1, default=plain))


if __name__ == "__main__":
    main()
