"""The network behind `LSTMForecaster`: LSTM encoder, LSTM decoder over known-future inputs, attention.

Shapes: B series windows, L lookback steps, H horizon steps.
- encoder input per past step: scaled target, observed flag, dynamic features, calendar, embeddings of
  the dynamic categoricals, and the static vector (static embeddings + numeric statics + log scale);
- decoder input per future step: the same known-future features (no target) and a horizon-step embedding;
  it starts from the encoder's final state (direct multi-horizon: all H steps in one pass, no feedback);
- attention: every decoder step queries the L encoder states (keys carry a learned lag-position
  embedding); the values carry the encoder states and the past demand features themselves, so the
  weights say whose demand the forecast draws on; they are what `LSTMForecaster.attention_weights`
  reports;
- head: per step a point value (log link for Poisson/Tweedie, softplus for MSE) and two quantile offsets
  that keep lower <= point <= upper by construction.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def embedding_dim(cardinality: int) -> int:
    """A small embedding width for a categorical with `cardinality` values (index 0 = unknown)."""
    return int(min(8, max(2, round(1.6 * cardinality**0.4))))


class ForecastNet(nn.Module):
    """Encoder-decoder LSTM with attention emitting point + 5%/95% quantiles for H steps at once."""

    def __init__(
        self,
        n_num: int,
        n_target: int,
        cat_cardinalities: list[int],
        static_cat_cardinalities: list[int],
        n_static_num: int,
        lookback: int,
        horizon: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
        log_link: bool = True,
    ):
        super().__init__()
        self.lookback = lookback
        self.horizon = horizon
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.log_link = log_link
        self.cat_embs = nn.ModuleList(nn.Embedding(c, embedding_dim(c)) for c in cat_cardinalities)
        self.static_embs = nn.ModuleList(nn.Embedding(c, embedding_dim(c)) for c in static_cat_cardinalities)
        n_cat = sum(e.embedding_dim for e in self.cat_embs)
        n_static = sum(e.embedding_dim for e in self.static_embs) + n_static_num + 1  # + log scale
        self.static_dim = 16
        self.static_proj = nn.Sequential(nn.Linear(n_static, self.static_dim), nn.ReLU())
        step_in = n_num + n_cat + self.static_dim
        self.encoder = nn.LSTM(
            step_in + n_target,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.step_emb = nn.Embedding(horizon, 8)
        self.decoder = nn.LSTM(
            step_in + 2 + 8,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.lag_emb = nn.Parameter(torch.zeros(lookback, hidden_size))
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.value_target = nn.Linear(n_target, hidden_size)  # past demand itself flows through attention
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden_size + self.static_dim, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, 3),
        )
        nn.init.normal_(self.lag_emb, std=0.02)

    def _step_inputs(self, num: torch.Tensor, cat: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        parts = [num]
        parts += [emb(cat[..., j]) for j, emb in enumerate(self.cat_embs)]
        parts.append(static.unsqueeze(1).expand(-1, num.shape[1], -1))
        return torch.cat(parts, dim=-1)

    def forward(
        self,
        enc_target: torch.Tensor,
        observed: torch.Tensor,
        dec_target: torch.Tensor,
        num: torch.Tensor,
        cat: torch.Tensor,
        static_cat: torch.Tensor,
        static_num: torch.Tensor,
        log_scale: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs: enc_target [B, L, Ft] (scaled target features), observed [B, L], dec_target [B, H, 2]
        (scaled seasonal features), num [B, L+H, Fn], cat [B, L+H, Fc] long, static_cat [B, Sc] long,
        static_num [B, Sn], log_scale [B].

        Returns (point, lower, upper) [B, H] in scaled units and attention weights [B, H, L].
        """
        L = enc_target.shape[1]
        parts = [emb(static_cat[:, j]) for j, emb in enumerate(self.static_embs)]
        static = self.static_proj(torch.cat([*parts, static_num, log_scale.unsqueeze(-1)], dim=-1))
        steps = self._step_inputs(num, cat, static)
        enc_in = torch.cat([enc_target, steps[:, :L]], dim=-1)
        enc_out, state = self.encoder(enc_in)
        fut = steps[:, L:]
        H = fut.shape[1]
        step_ids = torch.arange(H, device=fut.device).clamp(max=self.horizon - 1)
        step = self.step_emb(step_ids).unsqueeze(0).expand(fut.shape[0], -1, -1)
        dec_in = torch.cat([fut, dec_target, step], dim=-1)
        dec_out, _ = self.decoder(dec_in, state)
        keys = self.key(enc_out + self.lag_emb[-L:].unsqueeze(0))
        scores = torch.einsum("bhd,bld->bhl", self.query(dec_out), keys) / math.sqrt(self.hidden_size)
        scores = scores.masked_fill(observed.unsqueeze(1) < 0.5, -1e4)
        attn = torch.softmax(scores, dim=-1)
        values = self.value(enc_out) + self.value_target(enc_target)
        context = torch.einsum("bhl,bld->bhd", attn, values)
        feats = torch.cat([self.drop(dec_out), self.drop(context), static.unsqueeze(1).expand(-1, H, -1)], -1)
        raw = self.head(feats)
        if self.log_link:
            point = torch.exp(raw[..., 0].clamp(-15.0, 8.0))
        else:
            point = nn.functional.softplus(raw[..., 0])
        base = point.detach()
        lower = base * torch.sigmoid(raw[..., 1] + 1.0)
        upper = base + nn.functional.softplus(raw[..., 2])
        return point, lower, upper, attn
