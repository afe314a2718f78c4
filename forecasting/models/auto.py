"""Choice per demand class by backtest, simple ensembles, and conformal 90% intervals.

`AutoForecaster` backtests its candidate models over rolling windows inside the training data and ranks
them by RMSSE (squared error scaled by the series' naive error: the mean forecast, which safety stock
and orders build on). The default for every series is the equal-weight combination of the best few
(forecast combinations are the robust choice when a short backtest cannot separate close models).
A demand class (smooth, erratic, intermittent, lumpy) takes a single model or smaller combination
instead only when that beats the default by CLASS_MARGIN in every window on the class's series, and a
series only when it wins by SERIES_MARGIN in every window on its own.
Intervals are split-conformal: the chosen forecast's backtest errors, divided by each series' own
backtest RMSE, pooled per demand class; the 5% and 95% quantiles of those scaled errors times the
series' RMSE bound its forecast. With a single candidate it is that model with conformal intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
import pandas as pd

from forecasting.backtest import cross_validate
from forecasting.classify import classify_demand
from forecasting.metrics import naive_scales
from forecasting.models.base import Forecaster, finish
from forecasting.models.registry import make_model
from forecasting.models.stats import season_length

ALPHA = 0.10  # 90% interval
CLASS_MARGIN = 0.10  # a demand class leaves the default combination for a candidate this much better
SERIES_MARGIN = 0.30  # ... and a single series for one this much better, in every backtest window
MIN_POOLED = 50  # scaled errors a class needs to get its own interval quantiles
# Above this many rows one backtest window inside the training data is enough (it already holds a
# large sample of errors) and halves the refits that dominate the run time on big data.
LARGE_ROWS = 600_000


def calibration_windows(df: pd.DataFrame) -> int:
    """Backtest windows `auto` runs inside `df`: 2, or 1 above LARGE_ROWS rows."""
    return 1 if len(df) > LARGE_ROWS else 2


def _conformal_bounds(z: pd.Series) -> tuple[float, float]:
    """Split-conformal 5% / 95% bounds of scaled errors: the order statistics at ranks
    floor((n + 1) * 0.05) and ceil((n + 1) * 0.95), the finite-sample corrected quantiles."""
    n = len(z)
    if n == 0:
        return -1.645, 1.645
    ordered = np.sort(np.asarray(z, dtype=float))
    lo = min(max(int(np.floor((n + 1) * ALPHA / 2)), 1), n)
    hi = min(max(int(np.ceil((n + 1) * (1 - ALPHA / 2))), 1), n)
    return float(ordered[lo - 1]), float(ordered[hi - 1])


class AutoForecaster(Forecaster):
    name = "auto"

    def __init__(
        self,
        horizon: int,
        candidates: tuple[str, ...] = ("snaive", "ma", "ets", "sba", "tsb", "lgbm"),
        n_windows: int | None = None,
        ensemble_size: int = 3,
        stockout_weight: float = 1.0,
        seed: int = 42,
        progress: Callable[[str], None] | None = None,
    ):
        self.horizon = horizon
        self.candidates = candidates
        self.n_windows = n_windows
        self.ensemble_size = ensemble_size
        self.stockout_weight = stockout_weight
        self.seed = seed
        self.progress = progress

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def fit(self, df: pd.DataFrame, freq: str) -> AutoForecaster:
        """Backtest the candidates over `n_windows` (default: `calibration_windows(df)`), choose per
        class and series, calibrate the intervals, and fit the chosen models on all of `df`."""
        windows = self.n_windows or calibration_windows(df)
        cv = {}
        for name in self.candidates:
            self._say(f"backtesting {name}")
            cv[name], _ = cross_validate(
                lambda n=name: make_model(n, self.stockout_weight, self.seed, self.horizon),
                df,
                freq,
                self.horizon,
                windows,
            )
        self.calibrate(df, freq, cv)
        self.models_ = {}
        for name in self.needed_:
            self._say(f"fitting {name} on all data")
            self.models_[name] = make_model(name, self.stockout_weight, self.seed, self.horizon).fit(df, freq)
        return self

    def calibrate(self, df: pd.DataFrame, freq: str, cv: dict[str, pd.DataFrame]) -> AutoForecaster:
        """Choice per class and series and the interval bounds from backtest forecasts made inside `df`
        (`cv`: candidate name -> `cross_validate` frame); fits no model. `fit` calls it, and a backtest
        of one model calls it with that model's earlier windows instead of refitting them."""
        self.freq_ = freq
        self.classes_ = classify_demand(df)
        names = list(self.candidates)
        cv = {n: f.set_index(["unique_id", "ds", "cutoff"]) for n, f in cv.items() if len(f)}
        self.cv_ = cv
        preds = pd.DataFrame({n: f["yhat"] for n, f in cv.items()}) if cv else pd.DataFrame()
        if not preds.empty:
            preds["y"] = next(iter(cv.values()))["y"]
            preds = preds.dropna()
        scales = naive_scales(df, season_length(freq)).set_index("unique_id")
        self.choice_, self.scores_ = self._choose(preds, [n for n in names if n in cv], scales)
        self.residuals_ = self._residuals(preds, scales)
        needed = sorted({m for combo in self.choice_["candidate"].unique() for m in combo.split("+")})
        if not needed:
            needed = [names[0]]
            self.choice_["candidate"] = names[0]
        self.needed_ = needed
        return self

    def _choose(
        self, preds: pd.DataFrame, singles: list[str], scales: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        ids = self.classes_[["unique_id", "demand_class"]].copy()
        if preds.empty or not singles:
            ids["candidate"] = singles[0] if singles else self.candidates[0]
            return ids, pd.DataFrame()
        uid = preds.index.get_level_values("unique_id")
        mse_s = scales["mse_scale"].reindex(uid).to_numpy()

        def window_rmsse(yhat: pd.Series) -> pd.Series:
            sq = pd.Series((preds["y"].to_numpy() - yhat.to_numpy()) ** 2 / mse_s, index=preds.index)
            return np.sqrt(sq.groupby(level=["unique_id", "cutoff"]).mean())

        scores = pd.DataFrame({n: window_rmsse(preds[n]) for n in singles})  # index: (unique_id, cutoff)
        top = sorted(singles, key=lambda n: scores[n].mean())[: self.ensemble_size]
        for k in range(2, len(top) + 1):
            for combo in combinations(top, k):
                name = "+".join(combo)
                preds[name] = preds[list(combo)].mean(axis=1)
                scores[name] = window_rmsse(preds[name])
        default = "+".join(top)
        cls = ids.set_index("unique_id")["demand_class"]
        series_cls = cls.reindex(scores.index.get_level_values("unique_id")).to_numpy()
        chosen = pd.Series(default, index=cls.index)
        # A class leaves the combination of the best few only when another candidate beats it clearly in
        # every window; so does a single series (by a wider margin): two windows are a small sample.
        for name, group in scores.groupby(series_cls):
            by_window = group.groupby(level="cutoff").mean()
            best = by_window.mean().idxmin()
            if len(by_window) >= 2 and (by_window[best] < (1 - CLASS_MARGIN) * by_window[default]).all():
                chosen[cls.index[cls == name]] = best
        for uid_, w in scores.groupby(level="unique_id"):
            w = w.droplevel("unique_id")
            best, current = w.mean().idxmin(), chosen[uid_]
            if best != current and len(w) >= 2 and (w[best] < (1 - SERIES_MARGIN) * w[current]).all():
                chosen[uid_] = best
        ids["candidate"] = ids["unique_id"].map(chosen).fillna(default)
        self._preds = preds
        return ids, scores.groupby(level="unique_id").mean()

    def _residuals(self, preds: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
        """Per series: 90% conformal error bounds, the class's pooled 5%/95% quantiles of backtest errors
        divided by each series' own backtest RMSE, scaled back by the series' RMSE."""
        ids = self.choice_.set_index("unique_id")
        naive = np.sqrt(scales["mse_scale"]).reindex(ids.index).fillna(0.0)
        if preds.empty:  # no backtest possible: +-1.645 one-step naive errors
            return pd.DataFrame({"q_lo": -1.645 * naive, "q_hi": 1.645 * naive}, index=ids.index)
        uid = preds.index.get_level_values("unique_id")
        chosen = ids["candidate"].reindex(uid).to_numpy()
        yhat = np.full(len(preds), np.nan)
        for cand in pd.unique(chosen):
            mask = chosen == cand
            if cand in self._preds.columns:
                yhat[mask] = self._preds[cand].to_numpy()[mask]
        errs = pd.DataFrame({"unique_id": uid, "err": preds["y"].to_numpy() - yhat}).dropna()
        rmse = errs.groupby("unique_id")["err"].apply(lambda e: float(np.sqrt(np.mean(e**2))))
        scale = rmse.reindex(ids.index)
        scale = scale.where(scale > 0, naive)
        errs["z"] = errs["err"] / scale.reindex(errs["unique_id"]).to_numpy()
        errs["demand_class"] = errs["unique_id"].map(ids["demand_class"])
        errs = errs[np.isfinite(errs["z"])]
        overall = _conformal_bounds(errs["z"])
        bounds = {
            c: _conformal_bounds(z) if len(z) >= MIN_POOLED else overall
            for c, z in errs.groupby("demand_class")["z"]
        }
        lo = ids["demand_class"].map(lambda c: bounds.get(c, overall)[0])
        hi = ids["demand_class"].map(lambda c: bounds.get(c, overall)[1])
        return pd.DataFrame({"q_lo": lo * scale, "q_hi": hi * scale}, index=ids.index).fillna(0.0)

    def predict(self, h: int, X_df: pd.DataFrame | None = None) -> pd.DataFrame:
        fcs = {n: m.predict(h, X_df).set_index(["unique_id", "ds"])["yhat"] for n, m in self.models_.items()}
        base = pd.DataFrame(fcs)
        uid = base.index.get_level_values("unique_id")
        choice = self.choice_.set_index("unique_id")["candidate"].reindex(uid).to_numpy()
        yhat = np.full(len(base), np.nan)
        for cand in pd.unique(choice):
            if not isinstance(cand, str):
                continue
            mask = choice == cand
            parts = [p for p in cand.split("+") if p in base.columns]
            yhat[mask] = base.loc[mask, parts].mean(axis=1).to_numpy()
        fallback = base.mean(axis=1).to_numpy()
        yhat = np.where(np.isnan(yhat), fallback, yhat)
        out = base.index.to_frame(index=False)
        out["yhat"] = np.clip(yhat, 0, None)
        out["model"] = pd.Series(choice).fillna("+".join(base.columns)).to_numpy()
        return self.with_intervals(out)

    def with_intervals(self, fc: pd.DataFrame) -> pd.DataFrame:
        """`fc` (`unique_id, ds, yhat, model`) with its calibrated 90% bounds, in the contract columns."""
        out = fc.copy()
        res = self.residuals_.reindex(out["unique_id"])
        out["yhat_lower"] = out["yhat"] + res["q_lo"].fillna(0).to_numpy()
        out["yhat_upper"] = out["yhat"] + res["q_hi"].fillna(0).to_numpy()
        return finish(out)
