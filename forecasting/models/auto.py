"""Choice per demand class by backtest, simple ensembles, and conformal 90% intervals.

`AutoForecaster` backtests its candidate models over rolling windows inside the training data, adds
equal-weight ensembles of the best few, and picks for every demand class (smooth, erratic,
intermittent, lumpy) the candidate with the lowest mean scaled error (RMSSE + MASE) on that class's
series. A series whose own backtest favours another candidate clearly in every window takes that one.
Intervals are split-conformal: the 5th and 95th percentiles of the chosen candidate's backtest errors
for the series, shrunk towards its class's pooled (scale-free) errors when the series has few.
With a single candidate it is simply that model with conformal intervals.
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
MIN_OWN_RESIDUALS = 40


class AutoForecaster(Forecaster):
    name = "auto"

    def __init__(
        self,
        horizon: int,
        candidates: tuple[str, ...] = ("snaive", "ma", "ets", "sba", "tsb", "lgbm"),
        n_windows: int = 2,
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
        self.freq_ = freq
        self.classes_ = classify_demand(df)
        names = list(self.candidates)
        cv = {}
        for name in names:
            self._say(f"backtesting {name}")
            frame, _ = cross_validate(
                lambda n=name: make_model(n, self.stockout_weight, self.seed, self.horizon),
                df,
                freq,
                self.horizon,
                self.n_windows,
            )
            if len(frame):
                cv[name] = frame.set_index(["unique_id", "ds", "cutoff"])
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
        self.models_ = {}
        for name in needed:
            self._say(f"fitting {name} on all data")
            self.models_[name] = make_model(name, self.stockout_weight, self.seed, self.horizon).fit(df, freq)
        return self

    def _choose(
        self, preds: pd.DataFrame, singles: list[str], scales: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        ids = self.classes_[["unique_id", "demand_class"]].copy()
        if preds.empty or not singles:
            ids["candidate"] = singles[0] if singles else self.candidates[0]
            return ids, pd.DataFrame()
        uid = preds.index.get_level_values("unique_id")
        mae_s = scales["mae_scale"].reindex(uid).to_numpy()
        mse_s = scales["mse_scale"].reindex(uid).to_numpy()

        def score_of(yhat: pd.Series) -> pd.DataFrame:
            err = preds["y"].to_numpy() - yhat.to_numpy()
            frame = pd.DataFrame(
                {"abs": np.abs(err) / mae_s, "sq": err**2 / mse_s},
                index=preds.index,
            )
            by = frame.groupby(level=["unique_id", "cutoff"]).mean()
            return np.sqrt(by["sq"]) + by["abs"]

        single_scores = {n: score_of(preds[n]) for n in singles}
        overall = sorted(singles, key=lambda n: single_scores[n].mean())
        top = overall[: self.ensemble_size]
        combos = [c for k in (2, 3) for c in combinations(top, k) if len(top) >= k]
        all_scores = dict(single_scores)
        for combo in combos:
            name = "+".join(combo)
            preds[name] = preds[list(combo)].mean(axis=1)
            all_scores[name] = score_of(preds[name])
        scores = pd.DataFrame(all_scores)  # index: (unique_id, cutoff)
        per_series = scores.groupby(level="unique_id").mean()
        cls = ids.set_index("unique_id")["demand_class"].reindex(per_series.index)
        class_best = per_series.groupby(cls).mean().idxmin(axis=1)
        chosen = cls.map(class_best).fillna(overall[0])
        # A series keeps its class's choice unless another candidate wins in every window by 20%.
        by_window = scores.groupby(level=["unique_id", "cutoff"]).mean()
        own_best = per_series.idxmin(axis=1)
        for uid_, best in own_best.items():
            current = chosen[uid_]
            if best == current:
                continue
            w = by_window.loc[uid_]
            if len(w) >= 2 and (w[best] < 0.8 * w[current]).all():
                chosen[uid_] = best
        ids["candidate"] = ids["unique_id"].map(chosen).fillna(overall[0])
        self._preds = preds
        return ids, per_series

    def _residuals(self, preds: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
        """Per series: the 5%/95% error quantiles of its chosen candidate, shrunk to its class's pooled."""
        ids = self.choice_.set_index("unique_id")
        if preds.empty:  # no backtest possible: +-1.645 one-step naive errors
            s = np.sqrt(scales["mse_scale"]).reindex(ids.index).fillna(0.0)
            return pd.DataFrame({"q_lo": -1.645 * s, "q_hi": 1.645 * s}, index=ids.index)
        uid = preds.index.get_level_values("unique_id")
        chosen = ids["candidate"].reindex(uid).to_numpy()
        yhat = np.full(len(preds), np.nan)
        for cand in np.unique(chosen):
            mask = chosen == cand
            if cand in self._preds.columns:
                yhat[mask] = self._preds[cand].to_numpy()[mask]
        scale = np.sqrt(scales["mse_scale"]).reindex(uid).to_numpy()
        errs = pd.DataFrame(
            {
                "unique_id": uid,
                "err": preds["y"].to_numpy() - yhat,
                "scaled": (preds["y"].to_numpy() - yhat) / scale,
            }
        ).dropna()
        errs["demand_class"] = errs["unique_id"].map(ids["demand_class"])
        own = errs.groupby("unique_id")["err"].agg(
            q_lo=lambda e: np.quantile(e, ALPHA / 2), q_hi=lambda e: np.quantile(e, 1 - ALPHA / 2), n="size"
        )
        pooled = errs.groupby("demand_class")["scaled"].agg(
            p_lo=lambda e: np.quantile(e, ALPHA / 2), p_hi=lambda e: np.quantile(e, 1 - ALPHA / 2)
        )
        out = ids[["demand_class"]].join(own).join(pooled, on="demand_class")
        s = np.sqrt(scales["mse_scale"]).reindex(out.index)
        w = (out["n"].fillna(0) / MIN_OWN_RESIDUALS).clip(upper=1.0)
        out["q_lo"] = w * out["q_lo"].fillna(0) + (1 - w) * out["p_lo"].fillna(0) * s
        out["q_hi"] = w * out["q_hi"].fillna(0) + (1 - w) * out["p_hi"].fillna(0) * s
        return out[["q_lo", "q_hi"]].fillna(0.0)

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
        res = self.residuals_.reindex(uid)
        out["yhat_lower"] = out["yhat"] + res["q_lo"].fillna(0).to_numpy()
        out["yhat_upper"] = out["yhat"] + res["q_hi"].fillna(0).to_numpy()
        out["model"] = pd.Series(choice).fillna("+".join(base.columns)).to_numpy()
        return finish(out)
