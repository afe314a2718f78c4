"""A global PyTorch forecaster: LSTM encoder-decoder with attention over the lookback window.

One network is trained over windows cut from all series. Each window's target history is divided by
its own scale (1 + mean demand over the lookback), so small and large series share one model; the
encoder also sees rolling means of the target (7/28/91 days for daily data), the log of the scale,
known-future exogenous features (numeric ones both globally standardised and relative to the series'
own mean, text ones as embeddings), calendar features, and embeddings of the static categoricals
(store, category, ...); the decoder sees the future exogenous and calendar features and the last
same-weekday (season) values. It emits the whole horizon at once: a point forecast (Tweedie, Poisson
or squared-error loss, optionally weighting under-forecasts `stockout_weight` times) and 5%/95%
quantiles (pinball loss) for the 90% interval. With `weight_by_scale` each window's loss counts as
if computed in the data's own units, so high-volume series weigh more (as in a LightGBM fit on raw
units); without it every window counts the same.

Training: Adam, gradient clipping, warm-up + cosine learning rate, dropout, an exponential moving
average of the weights, early stopping on the last `horizon` periods of every series (time-based
validation), fixed seeds, `torch.set_num_threads`.
Saved as `config.json` + `model.safetensors` + `context.safetensors` (tensors only, no pickled code).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from forecasting.errors import InputError
from forecasting.models.base import LEVEL, Forecaster, exog_columns, finish, static_columns
from forecasting.models.lstm_net import ForecastNet

FORMAT = "stockpilot-lstm"
FORMAT_VERSION = 1
QUANTILES = ((100 - LEVEL) / 200, 1 - (100 - LEVEL) / 200)  # 0.05, 0.95
MAX_CATEGORIES = 64  # dynamic text columns keep their most frequent values; the rest share one code
DEFAULT_HORIZON = {"D": 28, "W": 13, "MS": 12}
DEFAULT_LOOKBACK = {"D": 56, "W": 26, "MS": 12}
ROLLING = {"D": (7, 28, 91), "W": (4, 13, 52), "MS": (3, 12)}  # rolling means fed to the encoder
SEASON = {"D": (7, 4), "W": (52, 1), "MS": (12, 1)}  # (season length, seasons averaged) for the decoder


def freq_key(freq: str) -> str:
    if freq.startswith("W"):
        return "W"
    return "MS" if freq.startswith("M") else "D"


def calendar_features(dates: pd.DatetimeIndex, freq: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Calendar features of `dates`: (numeric [n, k] float32, codes [n, m] int64, code cardinalities)."""
    key = freq_key(freq)
    month = dates.month.to_numpy()
    cats, cards, nums = [month], [13], []
    if key == "D":
        cats.append(dates.dayofweek.to_numpy() + 1)
        cards.append(8)
        dom = 2 * np.pi * (dates.day.to_numpy() - 1) / 31.0
        doy = 2 * np.pi * (dates.dayofyear.to_numpy() - 1) / 366.0
        nums += [np.sin(dom), np.cos(dom), np.sin(doy), np.cos(doy)]
    elif key == "W":
        woy = 2 * np.pi * (dates.isocalendar().week.to_numpy().astype(float) - 1) / 53.0
        nums += [np.sin(woy), np.cos(woy)]
    num = np.stack(nums, axis=1).astype(np.float32) if nums else np.zeros((len(dates), 0), np.float32)
    return num, np.stack(cats, axis=1).astype(np.int64), cards


def date_grid(ends: pd.DatetimeIndex, freq: str, first: int, last: int) -> np.ndarray:
    """[len(ends), last - first + 1] datetime64: each end date moved by first..last periods of `freq`."""
    offset = pd.tseries.frequencies.to_offset(freq)
    return np.stack([(ends + k * offset).to_numpy() for k in range(first, last + 1)], axis=1)


class LSTMForecaster(Forecaster):
    """Global LSTM encoder-decoder with attention (PyTorch); see the module docstring.

    Parameters (defaults won the M5 benchmark, `benchmarks/bench_lstm.py`):
    - `horizon`, `lookback`: periods emitted at once and periods attended to; None = by frequency
      (daily 28/56, weekly 13/26, monthly 12/12). `predict(h)` with h > horizon feeds its own
      forecasts back as history.
    - `hidden_size`, `num_layers`, `dropout`: LSTM width, depth (encoder and decoder), dropout.
    - `loss`: "tweedie" (with `tweedie_power`), "poisson" or "mse" for the point forecast;
      `quantile_weight` weighs the 5%/95% pinball losses; `stockout_weight` k >= 1 weighs
      under-forecasts k times (1 = symmetric); `weight_by_scale` counts each window's loss in the
      data's units (high-volume series weigh more).
    - `learning_rate`, `weight_decay`, `batch_size`, `steps_per_epoch` (None = one pass over the
      windows, 20..100 batches), `max_epochs`, `patience`, `min_delta` (relative), `grad_clip`,
      `ema_decay`: the training loop.
    - `seed`; `num_threads` (None = STOCKPILOT_THREADS or all cores; set for fit and predict, then
      restored); `device` (None = CUDA when available, else CPU); `progress` (a Rich bar per epoch).

    After `predict`, `attention_weights()` and `attention_summary()` tell which past periods the
    forecast leaned on. `save_pretrained(dir)` / `from_pretrained(dir)` store and load a fitted model.
    """

    name = "lstm"

    def __init__(
        self,
        horizon: int | None = None,
        lookback: int | None = None,
        hidden_size: int = 48,
        num_layers: int = 2,
        dropout: float = 0.1,
        loss: str = "tweedie",
        tweedie_power: float = 1.2,
        stockout_weight: float = 1.0,
        quantile_weight: float = 0.5,
        weight_by_scale: bool = True,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        steps_per_epoch: int | None = None,
        max_epochs: int = 10,
        patience: int = 4,
        min_delta: float = 0.005,
        grad_clip: float = 1.0,
        ema_decay: float = 0.99,
        seed: int = 42,
        num_threads: int | None = None,
        device: str | None = None,
        progress: bool = False,
    ):
        self.horizon = horizon
        self.lookback = lookback
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.loss = loss
        self.tweedie_power = tweedie_power
        self.stockout_weight = stockout_weight
        self.quantile_weight = quantile_weight
        self.weight_by_scale = weight_by_scale
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_delta = min_delta
        self.grad_clip = grad_clip
        self.ema_decay = ema_decay
        self.seed = seed
        self.num_threads = num_threads
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ parameters and runtime
    def get_params(self) -> dict:
        """Constructor parameters (scikit-learn style)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params) -> LSTMForecaster:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"unknown parameter {key!r}")
            setattr(self, key, value)
        return self

    def _threads(self) -> int:
        from forecasting.settings import get_settings

        return int(self.num_threads or get_settings().threads or os.cpu_count() or 1)

    def _device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @contextmanager
    def _torch_threads(self):
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads())
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _check_params(self) -> None:
        if self.loss not in ("tweedie", "poisson", "mse"):
            raise InputError(f"unknown loss {self.loss!r}: use tweedie, poisson or mse")
        if not 1.0 < self.tweedie_power < 2.0:
            raise InputError("tweedie_power must lie strictly between 1 and 2")
        if self.stockout_weight < 1.0:
            raise InputError("stockout_weight must be at least 1 (1 = symmetric)")

    # ------------------------------------------------------------------ features
    def _num_features(self, raw: np.ndarray, series: np.ndarray) -> np.ndarray:
        """Numeric dynamic columns [n, t, Dn] (NaN allowed) of series `series` [n] -> [n, t, 3 * Dn]:
        globally standardised value, value relative to the series' own mean, and a missing flag."""
        if raw.shape[-1] == 0:
            return np.zeros((*raw.shape[:-1], 0), np.float32)
        s_mean = self.series_num_mean_[series][:, None, :]
        missing = np.isnan(raw)
        z = (raw - self.num_mean_) / self.num_std_
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(s_mean) > 1e-9, raw / s_mean - 1.0, 0.0)
        z = np.where(missing, 0.0, np.clip(z, -5, 5))
        rel = np.where(missing, 0.0, np.clip(rel, -3, 3))
        return np.concatenate([z, rel, missing], axis=-1).astype(np.float32)

    def _cat_codes(self, values: pd.Series, col: str) -> np.ndarray:
        vocab = self.dyn_vocab_[col]
        text = values.astype("string")
        # vocabulary values -> 2.., a value outside it -> 1 ("other"), missing -> 0
        codes = pd.Categorical(text, categories=vocab).codes.astype(np.int64) + 2
        codes[text.isna().to_numpy()] = 0
        return codes

    def _dynamic_arrays(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        num = (
            frame[self.dyn_num_].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            if self.dyn_num_
            else np.zeros((len(frame), 0))
        )
        cat = (
            np.stack([self._cat_codes(frame[c], c) for c in self.dyn_cat_], axis=1)
            if self.dyn_cat_
            else np.zeros((len(frame), 0), np.int64)
        )
        return num, cat

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame, freq: str) -> LSTMForecaster:
        """Train on a long frame (`unique_id, ds, y` + exogenous columns) at pandas frequency `freq`."""
        self._check_params()
        if df is None or len(df) == 0:
            raise InputError("no rows to train the LSTM on")
        started = time.perf_counter()
        key = freq_key(freq)
        self.freq_ = freq
        self.horizon_ = int(self.horizon or DEFAULT_HORIZON[key])
        self.lookback_ = int(self.lookback or DEFAULT_LOOKBACK[key])
        df = df.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
        df["unique_id"] = df["unique_id"].astype(str)
        self._prepare(df)
        with self._torch_threads():
            self._train()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def _prepare(self, df: pd.DataFrame) -> None:
        """Grid arrays over all series and dates, fitted feature statistics, and the predict context."""
        offset = pd.tseries.frequencies.to_offset(self.freq_)
        self.static_ = static_columns(df)
        dynamic = [c for c in exog_columns(df) if c not in self.static_]
        self.dyn_cat_ = [c for c in dynamic if not pd.api.types.is_numeric_dtype(df[c])]
        self.dyn_num_ = [c for c in dynamic if c not in self.dyn_cat_]
        self.static_cat_ = [
            c for c in self.static_ if not pd.api.types.is_numeric_dtype(df[c]) or df[c].nunique() <= 64
        ]
        self.static_num_ = [c for c in self.static_ if c not in self.static_cat_]
        self.dyn_vocab_ = {
            c: [str(v) for v in df[c].dropna().astype(str).value_counts().index[:MAX_CATEGORIES]]
            for c in self.dyn_cat_
        }
        grid = pd.date_range(df["ds"].min(), df["ds"].max(), freq=offset)
        pos = grid.get_indexer(df["ds"])
        if (pos < 0).any():
            raise InputError(f"dates are not on a regular {self.freq_} grid; align them first")
        uids = pd.Index(sorted(df["unique_id"].unique()))
        sidx = uids.get_indexer(df["unique_id"])
        N, T = len(uids), len(grid)
        self.unique_ids_ = [str(u) for u in uids]
        y = df["y"].to_numpy(dtype=np.float64)
        if np.isnan(y).any() or (y < 0).any():
            raise InputError("the LSTM needs a non-negative target without gaps (fill or clip it first)")
        self.integer_target_ = bool(np.all(y == np.round(y)))
        Y = np.zeros((N, T), np.float32)
        OBS = np.zeros((N, T), np.float32)
        Y[sidx, pos] = y
        OBS[sidx, pos] = 1.0
        num_raw, cat_codes = self._dynamic_arrays(df)
        if self.dyn_num_:
            self.num_mean_ = np.nanmean(num_raw, axis=0)
            self.num_std_ = np.nanstd(num_raw, axis=0)
            self.num_mean_ = np.where(np.isnan(self.num_mean_), 0.0, self.num_mean_)
            self.num_std_ = np.where(~(self.num_std_ > 1e-9), 1.0, self.num_std_)
            means = pd.DataFrame(num_raw, columns=self.dyn_num_).groupby(sidx).mean()
            self.series_num_mean_ = (
                means.reindex(range(N))
                .fillna(pd.Series(self.num_mean_, index=self.dyn_num_))
                .to_numpy(np.float64)
            )
        else:
            self.num_mean_ = np.zeros(0)
            self.num_std_ = np.ones(0)
            self.series_num_mean_ = np.zeros((N, 0))
        NUMRAW = np.full((N, T, len(self.dyn_num_)), np.nan)
        NUMRAW[sidx, pos] = num_raw
        CAT = np.zeros((N, T, len(self.dyn_cat_)), np.int64)
        CAT[sidx, pos] = cat_codes
        NUM = self._num_features(NUMRAW, np.arange(N))
        # statics: categorical codes (0 = unknown) and standardised numerics, one row per series
        first = df.groupby(sidx, sort=True).first()
        self.static_vocab_ = {c: sorted(first[c].dropna().astype(str).unique()) for c in self.static_cat_}
        self.static_codes_ = (
            np.stack(
                [
                    pd.Index(self.static_vocab_[c]).get_indexer(first[c].astype(str)).clip(-1) + 1
                    for c in self.static_cat_
                ],
                axis=1,
            ).astype(np.int64)
            if self.static_cat_
            else np.zeros((N, 0), np.int64)
        )
        if self.static_num_:
            s = first[self.static_num_].to_numpy(np.float64)
            mu, sd = np.nanmean(s, axis=0), np.nanstd(s, axis=0)
            self.static_num_values_ = np.nan_to_num((s - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
        else:
            self.static_num_values_ = np.zeros((N, 0), np.float32)
        cal_num, cal_cat, self.cal_cards_ = calendar_features(grid, self.freq_)
        # series spans: first observation, last observation, first non-zero demand
        observed = OBS > 0
        start = observed.argmax(axis=1)
        end = T - 1 - observed[:, ::-1].argmax(axis=1)
        sale = (Y > 0) & observed
        first_sale = np.where(sale.any(axis=1), sale.argmax(axis=1), start)
        self.last_dates_ = pd.DatetimeIndex(grid[end])
        self._grid = {
            "Y": Y,
            "OBS": OBS,
            "NUM": NUM,
            "CAT": CAT,
            "CALNUM": cal_num,
            "CALCAT": cal_cat,
            "start": start,
            "end": end,
            "first_sale": first_sale,
        }
        # what predict needs: the last periods of every series' target and features, last raw exogenous
        L, P = self.lookback_, self._history()
        rows = np.arange(N)[:, None]
        cols = end[:, None] + np.arange(-P + 1, 1)[None, :]
        obs = OBS[rows, cols.clip(0)] * (cols >= 0)
        y_ctx = Y[rows, cols.clip(0)] * obs
        cols, ctx_obs = cols[:, -L:].clip(0), obs[:, -L:]
        self.context_ = {
            "y": y_ctx.astype(np.float32),
            "obs": obs.astype(np.float32),
            "num": NUM[rows, cols] * ctx_obs[..., None],
            "cat": (CAT[rows, cols] * ctx_obs[..., None]).astype(np.int64),
            "last_num": NUMRAW[np.arange(N), end],
            "last_cat": CAT[np.arange(N), end],
        }
        self.n_num_ = NUM.shape[-1] + cal_num.shape[1]
        self.n_target_ = 2 + len(ROLLING[freq_key(self.freq_)])
        self.cat_cards_ = [len(self.dyn_vocab_[c]) + 2 for c in self.dyn_cat_] + list(self.cal_cards_)
        self.static_cards_ = [len(self.static_vocab_[c]) + 1 for c in self.static_cat_]

    def _build_net(self) -> ForecastNet:
        return ForecastNet(
            n_num=self.n_num_,
            n_target=self.n_target_,
            cat_cardinalities=self.cat_cards_,
            static_cat_cardinalities=self.static_cards_,
            n_static_num=len(self.static_num_),
            lookback=self.lookback_,
            horizon=self.horizon_,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            log_link=self.loss != "mse",
        )

    def _history(self) -> int:
        """Target periods one window reads: the lookback plus what rolling and seasonal features need."""
        key = freq_key(self.freq_)
        season, n_seasons = SEASON[key]
        return self.lookback_ + max(max(ROLLING[key]), season * n_seasons)

    def _batch(self, series: np.ndarray, cutoff: np.ndarray) -> dict[str, torch.Tensor]:
        """Network inputs and targets for windows whose encoder ends at grid index `cutoff`."""
        g = self._grid
        L, H, P = self.lookback_, self.horizon_, self._history()
        rows = series[:, None]
        cols = cutoff[:, None] + np.arange(-P + 1, H + 1)[None, :]
        obs = g["OBS"][rows, cols.clip(0)] * (cols >= 0)
        y = g["Y"][rows, cols.clip(0)] * obs
        cols, obs_f = cols[:, P - L :].clip(0), obs[:, P - L :]
        num = np.concatenate([g["NUM"][rows, cols] * obs_f[..., None], g["CALNUM"][cols]], axis=-1)
        cat = np.concatenate(
            [g["CAT"][rows, cols] * obs_f[..., None].astype(np.int64), g["CALCAT"][cols]], -1
        )
        return self._tensors(series, y[:, :P], obs[:, :P], num, cat, y[:, P:], obs[:, P:])

    def _target_features(
        self, y_long: np.ndarray, obs_long: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """From the target history [B, P] (last column = forecast origin): the window scale [B], encoder
        target features [B, L, 2 + rolling] (scaled value, observed flag, scaled rolling means), the
        lookback's observed flags [B, L], and decoder seasonal features [B, H, 2] (last same-season
        value and the mean over the last seasons, scaled)."""
        key = freq_key(self.freq_)
        L, H = self.lookback_, self.horizon_
        B, P = y_long.shape
        yo = y_long * obs_long
        obs_hist = obs_long[:, -L:]
        scale = 1.0 + yo[:, -L:].sum(axis=1) / np.maximum(obs_hist.sum(axis=1), 1.0)
        cs = np.concatenate([np.zeros((B, 1)), np.cumsum(yo, axis=1)], axis=1)
        cn = np.concatenate([np.zeros((B, 1)), np.cumsum(obs_long, axis=1)], axis=1)
        end = np.arange(P - L + 1, P + 1)  # exclusive ends of the lookback positions in cs
        feats = [yo[:, -L:], obs_hist]
        for w in ROLLING[key]:
            total = cs[:, end] - cs[:, end - w]
            count = cn[:, end] - cn[:, end - w]
            feats.append(total / np.maximum(count, 1.0))
        enc = np.stack(feats, axis=-1)
        enc[..., 0] /= scale[:, None]
        enc[..., 2:] /= scale[:, None, None]
        season, n_seasons = SEASON[key]
        k = np.arange(1, H + 1)
        last = P - 1 + k - season * np.ceil(k / season).astype(int)  # [H] latest same-season position
        pos = last[:, None] - season * np.arange(n_seasons)[None, :]  # [H, n]
        valid = pos >= 0
        vals = yo[:, pos.clip(0)] * valid
        cnt = obs_long[:, pos.clip(0)] * valid
        seasonal_last = vals[..., 0] * (cnt[..., 0] > 0)
        seasonal_mean = vals.sum(-1) / np.maximum(cnt.sum(-1), 1.0)
        dec = np.stack([seasonal_last, seasonal_mean], axis=-1) / scale[:, None, None]
        return scale, enc.astype(np.float32), obs_hist.astype(np.float32), dec.astype(np.float32)

    def _tensors(
        self,
        series: np.ndarray,
        y_long: np.ndarray,
        obs_long: np.ndarray,
        num: np.ndarray,
        cat: np.ndarray,
        y_fut: np.ndarray | None = None,
        obs_fut: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        dev = self.device_
        scale, enc, obs_hist, dec = self._target_features(y_long, obs_long)
        out = {
            "enc_target": torch.as_tensor(enc, device=dev),
            "observed": torch.as_tensor(obs_hist, device=dev),
            "dec_target": torch.as_tensor(dec[:, : num.shape[1] - self.lookback_], device=dev),
            "num": torch.as_tensor(num, dtype=torch.float32, device=dev),
            "cat": torch.as_tensor(cat, dtype=torch.long, device=dev),
            "static_cat": torch.as_tensor(self.static_codes_[series], dtype=torch.long, device=dev),
            "static_num": torch.as_tensor(self.static_num_values_[series], dtype=torch.float32, device=dev),
            "log_scale": torch.as_tensor(np.log(scale), dtype=torch.float32, device=dev),
            "scale": torch.as_tensor(scale, dtype=torch.float32, device=dev),
        }
        if y_fut is not None:
            out["target"] = torch.as_tensor(y_fut / scale[:, None], dtype=torch.float32, device=dev)
            out["target_obs"] = torch.as_tensor(obs_fut, dtype=torch.float32, device=dev)
        return out

    @staticmethod
    def _net_args(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = ("enc_target", "observed", "dec_target", "num", "cat", "static_cat", "static_num", "log_scale")
        return {k: batch[k] for k in keys}

    def _loss(self, net: ForecastNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        point, lower, upper, _ = net(**self._net_args(batch))
        y, mask = batch["target"], batch["target_obs"]
        if self.loss == "tweedie":
            p = self.tweedie_power
            elem = -y * point.pow(1 - p) / (1 - p) + point.pow(2 - p) / (2 - p)
        elif self.loss == "poisson":
            elem = point - y * torch.log(point)
        else:
            elem = (point - y) ** 2
        if self.stockout_weight != 1.0:
            elem = elem * torch.where(y > point, self.stockout_weight, 1.0)
        for q, pred in zip(QUANTILES, (lower, upper), strict=True):
            diff = y - pred
            elem = elem + self.quantile_weight * torch.maximum(q * diff, (q - 1) * diff)
        if self.weight_by_scale:  # the loss as if computed in the data's own units
            power = {"tweedie": 2 - self.tweedie_power, "poisson": 1.0, "mse": 2.0}[self.loss]
            mask = mask * batch["scale"].pow(power).unsqueeze(-1)
        return (elem * mask).sum() / mask.sum().clamp(min=1e-9)

    def _windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Training windows (series, first and last valid cutoff) and validation windows (series, cutoff):
        validation targets are the last `horizon` periods of each series, training targets end before."""
        g, H = self._grid, self.horizon_
        lo = np.maximum(g["first_sale"], g["start"])
        hold = (g["end"] - 2 * H - lo) >= 0  # room for at least one training window before validation
        val_series = np.flatnonzero(hold)
        val_cut = g["end"][val_series] - H
        hi = np.where(hold, g["end"] - 2 * H, g["end"] - H)
        train = np.flatnonzero(hi >= lo)
        if len(train) == 0:
            raise InputError(f"series are too short to train the LSTM for a horizon of {H} periods")
        return train, lo[train], hi[train], np.stack([val_series, val_cut], axis=1)

    def _train(self) -> None:
        self.device_ = self._device()
        rng = np.random.default_rng(self.seed)
        train_s, lo, hi, val = self._windows()
        counts = (hi - lo + 1).astype(np.int64)
        cum = np.cumsum(counts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._build_net().to(self.device_)
            # validation, early stopping and the final model use an exponential moving average of the
            # weights (less noisy than the last step's); ema_decay=0 uses the raw weights
            avg = copy.deepcopy(net)
            opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
            # an epoch is one pass over the training windows, at least 20 and at most 100 batches
            steps = self.steps_per_epoch or int(np.clip(math.ceil(cum[-1] / self.batch_size), 20, 100))
            self.steps_per_epoch_ = steps
            total_steps = self.max_epochs * steps
            warmup = max(1, steps // 2)

            def lr_at(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                t = (step - warmup) / max(1, total_steps - warmup)
                return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
            val_batch = self._batch(val[:, 0], val[:, 1]) if len(val) else None
            best, best_state, bad, step = math.inf, None, 0, 0
            self.history_: list[dict] = []
            with self._progress_bar() as advance:
                for epoch in range(self.max_epochs):
                    net.train()
                    running = 0.0
                    for _ in range(steps):
                        flat = rng.integers(0, cum[-1], size=self.batch_size)
                        which = np.searchsorted(cum, flat, side="right")
                        offset = flat - (cum[which] - counts[which])
                        batch = self._batch(train_s[which], lo[which] + offset)
                        loss = self._loss(net, batch)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                        opt.step()
                        sched.step()
                        self._update_average(avg, net, step)
                        step += 1
                        running += float(loss.detach())
                    train_loss = running / steps
                    val_loss = self._evaluate(avg, val_batch) if val_batch is not None else train_loss
                    self.history_.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
                    advance(epoch, train_loss, val_loss)
                    # a later epoch within `min_delta` (relative) of the best so far is kept: validation
                    # on one window is noisy, and the decaying learning rate favours later weights
                    if val_loss <= best * (1 + self.min_delta) or best_state is None:
                        best, bad = min(best, val_loss), 0
                        best_state = copy.deepcopy(avg.state_dict())
                        self.best_epoch_ = epoch + 1
                    else:
                        bad += 1
                        if bad >= self.patience:
                            break
            if best_state is not None:
                avg.load_state_dict(best_state)
        avg.eval()
        self.net_ = avg
        del self._grid

    def _update_average(self, avg: ForecastNet, net: ForecastNet, step: int) -> None:
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(avg.parameters(), net.parameters(), strict=True):
                a.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def _evaluate(self, net: ForecastNet, batch: dict[str, torch.Tensor]) -> float:
        net.eval()
        with torch.no_grad():
            return float(self._loss(net, batch))

    @contextmanager
    def _progress_bar(self):
        """A transient Rich progress bar over epochs (only when `progress=True`)."""
        if not self.progress:
            yield lambda *args: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("lstm {task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("training", total=self.max_epochs)

            def advance(epoch: int, train_loss: float, val_loss: float) -> None:
                bar.update(
                    task,
                    completed=epoch + 1,
                    description=f"epoch {epoch + 1} train {train_loss:.4f} val {val_loss:.4f}",
                )

            yield advance

    # ------------------------------------------------------------------ predict
    def _future(self, h: int, X_df: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Future dates [N, h], dynamic features [N, h, F] and codes [N, h, C] (calendar included)."""
        N = len(self.unique_ids_)
        dates = date_grid(self.last_dates_, self.freq_, 1, h)
        grid = pd.DataFrame({"unique_id": np.repeat(self.unique_ids_, h), "ds": dates.ravel()})
        dynamic = [*self.dyn_num_, *self.dyn_cat_]
        if dynamic and X_df is not None:
            missing = [c for c in dynamic if c not in X_df.columns]
            if missing:
                raise InputError(f"future values lack exogenous column(s): {', '.join(missing)}")
            fut = X_df[["unique_id", "ds", *dynamic]].copy()
            fut["unique_id"] = fut["unique_id"].astype(str)
            fut = fut.drop_duplicates(["unique_id", "ds"], keep="last")
            grid = grid.merge(fut, on=["unique_id", "ds"], how="left")
        num_raw, cat = (
            self._dynamic_arrays(grid)
            if dynamic and X_df is not None
            else (
                np.full((N * h, len(self.dyn_num_)), np.nan),
                np.zeros((N * h, len(self.dyn_cat_)), np.int64),
            )
        )
        # a future period without a value keeps the series' last known value (as the LightGBM model does)
        num_raw = num_raw.reshape(N, h, -1)
        cat = cat.reshape(N, h, -1)
        for j in range(num_raw.shape[-1]):
            filled = pd.DataFrame(num_raw[..., j].T).ffill().to_numpy().T
            num_raw[..., j] = np.where(np.isnan(filled), self.context_["last_num"][:, j : j + 1], filled)
        if cat.shape[-1] and (X_df is None):
            cat[:] = self.context_["last_cat"][:, None, :]
        num = self._num_features(num_raw, np.arange(N))
        cal_num, cal_cat, _ = calendar_features(pd.DatetimeIndex(dates.ravel()), self.freq_)
        num = np.concatenate([num, cal_num.reshape(N, h, -1)], axis=-1)
        cat = np.concatenate([cat, cal_cat.reshape(N, h, -1)], axis=-1)
        return dates, num, cat

    def predict(self, h: int, X_df: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecast `h` periods after each series' last date; `X_df` holds future dynamic exogenous values."""
        if not hasattr(self, "net_"):
            raise RuntimeError("call fit before predict")
        h = int(h)
        if h < 1:
            raise InputError("horizon must be at least 1")
        N, L, H, P = len(self.unique_ids_), self.lookback_, self.horizon_, self._history()
        dates, fut_num, fut_cat = self._future(h, X_df)
        ctx = self.context_
        cal_num, cal_cat = self._context_calendar()
        y_hist, obs_hist = ctx["y"].copy(), ctx["obs"].copy()
        num_hist = np.concatenate([ctx["num"], cal_num], axis=-1)
        cat_hist = np.concatenate([ctx["cat"], cal_cat], axis=-1)
        series = np.arange(N)
        points, lowers, uppers, attns = [], [], [], []
        self.net_.eval()
        with self._torch_threads(), torch.no_grad():
            for b0 in range(0, h, H):
                b1 = min(h, b0 + H)
                num = np.concatenate([num_hist, fut_num[:, b0:b1]], axis=1)
                cat = np.concatenate([cat_hist, fut_cat[:, b0:b1]], axis=1)
                batch = self._tensors(series, y_hist, obs_hist, num, cat)
                point, lower, upper, attn = self.net_(**self._net_args(batch))
                scale = batch["scale"][:, None]
                points.append((point * scale).cpu().numpy())
                lowers.append((lower * scale).cpu().numpy())
                uppers.append((upper * scale).cpu().numpy())
                attns.append(attn.cpu().numpy())
                # longer horizons: the forecasts become history for the next block
                y_hist = np.concatenate([y_hist, points[-1]], axis=1)[:, -P:]
                obs_hist = np.concatenate([obs_hist, np.ones_like(points[-1])], axis=1)[:, -P:]
                num_hist = num[:, -L:]
                cat_hist = cat[:, -L:]
        out = pd.DataFrame(
            {
                "unique_id": np.repeat(self.unique_ids_, h),
                "ds": dates.ravel(),
                "yhat": np.concatenate(points, axis=1).ravel(),
                "yhat_lower": np.concatenate(lowers, axis=1).ravel(),
                "yhat_upper": np.concatenate(uppers, axis=1).ravel(),
            }
        )
        if self.integer_target_:  # quantiles of counts are counts
            out["yhat_lower"] = np.round(out["yhat_lower"])
            out["yhat_upper"] = np.round(out["yhat_upper"])
        self.attention_ = np.concatenate(attns, axis=1).astype(np.float32)  # [N, h, L]
        self.attention_dates_ = dates
        return finish(out, self.name)

    def _context_calendar(self) -> tuple[np.ndarray, np.ndarray]:
        dates = self._context_dates()
        num, cat, _ = calendar_features(pd.DatetimeIndex(dates.ravel()), self.freq_)
        N, L = dates.shape
        return num.reshape(N, L, -1), cat.reshape(N, L, -1)

    def _context_dates(self) -> np.ndarray:
        """The lookback dates of every series [N, L], ending at its last training date."""
        return date_grid(self.last_dates_, self.freq_, 1 - self.lookback_, 0)

    # ------------------------------------------------------------------ attention
    def attention_weights(self, unique_ids: list[str] | None = None) -> pd.DataFrame:
        """Attention of the last `predict`: `unique_id, ds` (forecast date), `past_ds`, `weight`.

        For every forecast date the weights over the lookback periods sum to 1; periods before a series
        began carry no weight and are left out. Beyond the trained horizon the lookback also holds
        earlier forecasts (their `past_ds` lies after the last training date).
        """
        if not hasattr(self, "attention_"):
            raise RuntimeError("call predict before asking for attention weights")
        attn, fdates = self.attention_, self.attention_dates_
        N, h, L = attn.shape
        H = self.horizon_
        span = np.concatenate([self._context_dates(), fdates], axis=1)  # [N, L + h] lookback .. horizon
        step = np.arange(h)
        past_idx = (step // H * H)[:, None] + np.arange(L)[None, :]  # [h, L] into span
        rows = np.arange(N) if unique_ids is None else pd.Index(self.unique_ids_).get_indexer(unique_ids)
        if (rows < 0).any():
            raise InputError("unknown unique_id in attention_weights")
        out = pd.DataFrame(
            {
                "unique_id": np.repeat(np.asarray(self.unique_ids_)[rows], h * L),
                "ds": np.repeat(fdates[rows], L, axis=1).ravel(),
                "past_ds": span[rows][:, past_idx].ravel(),
                "weight": attn[rows].ravel().astype(float),
            }
        )
        return out[out["weight"] > 0].reset_index(drop=True)

    def attention_summary(self, top_k: int = 5) -> pd.DataFrame:
        """Per series, the `top_k` past periods the forecast weighed most (mean over the first horizon
        block): `unique_id, rank, past_ds, weight, y` (`y` = demand on that past date)."""
        if not hasattr(self, "attention_"):
            raise RuntimeError("call predict before asking for attention weights")
        H = min(self.horizon_, self.attention_.shape[1])
        mean = self.attention_[:, :H].mean(axis=1)  # [N, L]
        k = min(top_k, mean.shape[1])
        top = np.argsort(-mean, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(mean))[:, None]
        dates = self._context_dates()
        out = pd.DataFrame(
            {
                "unique_id": np.repeat(self.unique_ids_, k),
                "rank": np.tile(np.arange(1, k + 1), len(mean)),
                "past_ds": dates[rows, top].ravel(),
                "weight": mean[rows, top].ravel().astype(float),
                "y": self.context_["y"][:, -self.lookback_ :][rows, top].ravel().astype(float),
            }
        )
        return out[out["weight"] > 0].reset_index(drop=True)

    # ------------------------------------------------------------------ save / load
    _ARRAYS = ("static_codes_", "static_num_values_", "series_num_mean_", "num_mean_", "num_std_")

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `config.json`, `model.safetensors` (state dict) and `context.safetensors` to `path`."""
        from safetensors.torch import save_file

        if not hasattr(self, "net_"):
            raise RuntimeError("call fit before save_pretrained")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        params = self.get_params()
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": params,
            "fitted": {
                "freq": self.freq_,
                "horizon": self.horizon_,
                "lookback": self.lookback_,
                "unique_ids": self.unique_ids_,
                "last_dates": [d.isoformat() for d in self.last_dates_],
                "static": self.static_,
                "static_cat": self.static_cat_,
                "static_num": self.static_num_,
                "static_vocab": self.static_vocab_,
                "dyn_num": self.dyn_num_,
                "dyn_cat": self.dyn_cat_,
                "dyn_vocab": self.dyn_vocab_,
                "cal_cards": list(self.cal_cards_),
                "n_num": self.n_num_,
                "n_target": self.n_target_,
                "integer_target": self.integer_target_,
                "cat_cards": self.cat_cards_,
                "static_cards": self.static_cards_,
                "best_epoch": self.best_epoch_,
                "history": self.history_,
            },
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        arrays = {f"context.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.context_.items()}
        arrays.update({k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in self._ARRAYS})
        save_file(arrays, str(folder / "context.safetensors"))
        return folder

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None) -> LSTMForecaster:
        """Load a model written by `save_pretrained` (no pickle: JSON + safetensors)."""
        from safetensors.torch import load_file

        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
            raise InputError(
                f"{folder} does not hold a StockPilot LSTM model (format {FORMAT} v{FORMAT_VERSION})"
            )
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        model = cls(**params)
        f = config["fitted"]
        model.freq_, model.horizon_, model.lookback_ = f["freq"], f["horizon"], f["lookback"]
        model.unique_ids_ = f["unique_ids"]
        model.last_dates_ = pd.DatetimeIndex(pd.to_datetime(f["last_dates"]))
        model.static_, model.static_cat_, model.static_num_ = f["static"], f["static_cat"], f["static_num"]
        model.static_vocab_ = f["static_vocab"]
        model.dyn_num_, model.dyn_cat_, model.dyn_vocab_ = f["dyn_num"], f["dyn_cat"], f["dyn_vocab"]
        model.cal_cards_, model.n_num_, model.n_target_ = f["cal_cards"], f["n_num"], f["n_target"]
        model.cat_cards_, model.static_cards_ = f["cat_cards"], f["static_cards"]
        model.best_epoch_, model.history_ = f["best_epoch"], f["history"]
        model.integer_target_ = f["integer_target"]
        arrays = {k: v.numpy() for k, v in load_file(str(folder / "context.safetensors")).items()}
        model.context_ = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("context.")}
        for k in cls._ARRAYS:
            setattr(model, k, arrays[k])
        model.device_ = model._device()
        net = model._build_net()
        net.load_state_dict(load_file(str(folder / "model.safetensors")))
        model.net_ = net.to(model.device_).eval()
        return model
