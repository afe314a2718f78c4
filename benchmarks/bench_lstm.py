"""Benchmark the LSTM forecaster against LightGBM on the real M5 subset (last 28 days held out).

Prints level-12 WRMSSE of LSTM, LightGBM and their mean, LSTM train / inference time and peak memory,
the 90% interval coverage, and whether seed 42 twice gives identical forecasts.

    .venv/bin/python benchmarks/bench_lstm.py            # full run (280 series, 2 threads)
    .venv/bin/python benchmarks/bench_lstm.py --series 40 --no-repeat --no-lgbm   # a quick look

WRMSSE level 12 = sum_i w_i * RMSSE_i with RMSSE_i = sqrt(mean test squared error / mean squared
one-step difference of the training history from the first non-zero sale), w_i = the series' dollar
sales (units * sell_price) over its last 28 training days, normalised to sum to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m5data import H, coverage, load_m5, official_future, peak_rss_gb, split, wrmsse  # noqa: E402

from forecasting.models.lgbm import LGBMForecaster  # noqa: E402
from forecasting.models.lstm import LSTMForecaster  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=None, help="use this many series (default: all 280)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-repeat", action="store_true", help="skip the second seed-42 fit")
    ap.add_argument("--no-lgbm", action="store_true", help="skip LightGBM")
    ap.add_argument("--params", default="{}", help="JSON of LSTMForecaster parameters to override")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    df = load_m5(args.series)
    train, test = split(df)
    X_test = official_future(train)
    params = {"seed": 42, "num_threads": args.threads, **json.loads(args.params)}
    res: dict = {"series": int(df["unique_id"].nunique()), "threads": args.threads, "params": params}

    t0, c0 = time.perf_counter(), time.process_time()
    lstm = LSTMForecaster(**params).fit(train, "D")
    res["lstm_train_s"] = time.perf_counter() - t0
    res["lstm_train_cpu_s"] = time.process_time() - c0  # all threads; wall time suffers on a shared machine
    res["lstm_epochs"] = len(lstm.history_)
    res["lstm_best_epoch"] = lstm.best_epoch_
    t0 = time.perf_counter()
    fc_lstm = lstm.predict(H, X_test)
    res["lstm_predict_s"] = time.perf_counter() - t0
    res["lstm_peak_rss_gb"] = peak_rss_gb()  # measured before LightGBM runs
    res["wrmsse_lstm"] = wrmsse(train, test, fc_lstm)
    res["coverage90_lstm"] = coverage(test, fc_lstm)
    summary = lstm.attention_summary(top_k=3)
    res["attention_mean_top1_weight"] = float(summary[summary["rank"] == 1]["weight"].mean())
    res["attention_uniform_weight"] = 1 / lstm.lookback_
    top_series = train.groupby("unique_id")["y"].sum().idxmax()
    res["attention_example"] = [
        f"{r.unique_id} {r.past_ds:%Y-%m-%d} ({r.past_ds:%a}) w={r.weight:.3f} y={r.y:g}"
        for r in summary[summary["unique_id"] == top_series].itertuples()
    ]
    if not args.no_repeat:
        again = LSTMForecaster(**params).fit(train, "D").predict(H, X_test)
        res["identical_with_same_seed"] = bool(
            np.array_equal(
                again[["yhat", "yhat_lower", "yhat_upper"]], fc_lstm[["yhat", "yhat_lower", "yhat_upper"]]
            )
        )
    if not args.no_lgbm:
        t0 = time.perf_counter()
        fc_lgbm = LGBMForecaster(seed=42, num_threads=args.threads).fit(train, "D").predict(H, X_test)
        res["lgbm_fit_predict_s"] = time.perf_counter() - t0
        res["wrmsse_lgbm"] = wrmsse(train, test, fc_lgbm)
        ens = fc_lstm[["unique_id", "ds", "yhat"]].merge(
            fc_lgbm[["unique_id", "ds", "yhat"]], on=["unique_id", "ds"], suffixes=("_lstm", "_lgbm")
        )
        ens["yhat"] = (ens["yhat_lstm"] + ens["yhat_lgbm"]) / 2
        res["wrmsse_ensemble"] = wrmsse(train, test, ens)
        res["lstm_vs_lgbm"] = res["wrmsse_lstm"] / res["wrmsse_lgbm"] - 1
        res["targets"] = {
            "lstm_within_5pct_of_lgbm": res["wrmsse_lstm"] <= 1.05 * res["wrmsse_lgbm"],
            "ensemble_beats_both": res["wrmsse_ensemble"] < min(res["wrmsse_lstm"], res["wrmsse_lgbm"]),
        }
    res.setdefault("targets", {})
    res["targets"].update(
        {
            "train_under_600s": res["lstm_train_s"] < 600,
            "peak_memory_under_3gb": res["lstm_peak_rss_gb"] < 3,
            "inference_under_5s": res["lstm_predict_s"] < 5,
        }
    )
    if "identical_with_same_seed" in res:
        res["targets"]["seed_repeatable"] = res["identical_with_same_seed"]
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return
    for key, value in res.items():
        if key == "targets":
            for name, ok in value.items():
                print(f"  target {name:<28} {'PASS' if ok else 'FAIL'}")
        elif isinstance(value, float):
            print(f"{key:<28} {value:.4f}")
        else:
            print(f"{key:<28} {value}")


if __name__ == "__main__":
    main()
