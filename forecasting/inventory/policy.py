"""Textbook inventory formulas, vectorised over SKUs (numpy arrays or scalars in, arrays out).

Units: demand and its standard deviation are per period; lead times are in the same periods.
Every function checks its inputs and raises InputError with a one-line reason instead of returning NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from forecasting.errors import InputError

Z90 = float(norm.ppf(0.95))  # half-width of a central 90% interval, in standard deviations


def _arr(x: ArrayLike, name: str, *, min_value: float | None = 0.0, strict: bool = False) -> np.ndarray:
    """Float array of `x`; fails on NaN/inf and on values below `min_value` (or equal to it if strict)."""
    a = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has missing or infinite values")
    if min_value is not None:
        bad = a <= min_value if strict else a < min_value
        if np.any(bad):
            sign = "positive" if strict and min_value == 0 else f"at least {min_value:g}"
            raise InputError(f"{name} must be {sign}, got {float(a[bad].flat[0]):g}")
    return a


def z_value(service_level: ArrayLike) -> np.ndarray:
    """Standard normal quantile of a cycle service level (probability of no stockout per cycle)."""
    p = _arr(service_level, "service level", min_value=None)
    if np.any((p <= 0) | (p >= 1)):
        raise InputError("service level must be between 0 and 1 (e.g. 0.95)")
    return norm.ppf(p)


def sigma_from_interval(lower: ArrayLike, upper: ArrayLike, level: float = 0.90) -> np.ndarray:
    """Per-period standard deviation implied by a central `level` prediction interval."""
    lo, hi = _arr(lower, "yhat_lower", min_value=None), _arr(upper, "yhat_upper", min_value=None)
    if np.any(hi < lo):
        raise InputError("forecast interval has yhat_upper below yhat_lower")
    return (hi - lo) / (2.0 * norm.ppf(0.5 + level / 2.0))


def lead_time_demand(
    demand: ArrayLike, sigma_demand: ArrayLike, lead_time: ArrayLike, sigma_lead_time: ArrayLike = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of demand over a random lead time.

    mean = d * L, std = sqrt(L * sigma_d^2 + d^2 * sigma_L^2) (independent demand and lead time).
    """
    d = _arr(demand, "demand")
    sd = _arr(sigma_demand, "demand standard deviation")
    lt = _arr(lead_time, "lead time")
    slt = _arr(sigma_lead_time, "lead-time standard deviation")
    return d * lt, np.sqrt(lt * sd**2 + d**2 * slt**2)


def safety_stock_csl(
    service_level: ArrayLike,
    demand: ArrayLike,
    sigma_demand: ArrayLike,
    lead_time: ArrayLike,
    sigma_lead_time: ArrayLike = 0.0,
) -> np.ndarray:
    """Safety stock for a cycle service level: z * sqrt(L * sigma_d^2 + d^2 * sigma_L^2)."""
    _, std = lead_time_demand(demand, sigma_demand, lead_time, sigma_lead_time)
    return z_value(service_level) * std


def normal_loss(z: ArrayLike) -> np.ndarray:
    """Standard normal loss function G(z) = E[(Z - z)+] = phi(z) - z * (1 - Phi(z))."""
    z = np.asarray(z, dtype=float)
    return norm.pdf(z) - z * norm.sf(z)


def inverse_normal_loss(g: ArrayLike, lo: float = -4.0, hi: float = 8.0, iterations: int = 60) -> np.ndarray:
    """z with G(z) = g, by vectorised bisection (G is decreasing); g is clipped to G's range."""
    g = np.clip(np.asarray(g, dtype=float), normal_loss(hi), normal_loss(lo))
    a = np.full(g.shape, lo)
    b = np.full(g.shape, hi)
    for _ in range(iterations):
        mid = (a + b) / 2.0
        above = normal_loss(mid) > g
        a = np.where(above, mid, a)
        b = np.where(above, b, mid)
    return (a + b) / 2.0


def safety_stock_fill_rate(
    fill_rate: ArrayLike, order_quantity: ArrayLike, sigma_ltd: ArrayLike
) -> np.ndarray:
    """Safety stock for a target fill rate (share of demand served from stock), (s, Q) policy.

    Expected shortage per cycle sigma_LT * G(z) must equal (1 - fill_rate) * Q; SS = z * sigma_LT,
    floored at 0 (a large order quantity alone can meet the target).
    """
    fr = _arr(fill_rate, "fill rate", min_value=None)
    if np.any((fr <= 0) | (fr >= 1)):
        raise InputError("fill rate must be between 0 and 1 (e.g. 0.98)")
    q = _arr(order_quantity, "order quantity")
    s = _arr(sigma_ltd, "lead-time demand standard deviation")
    fr, q, s = np.broadcast_arrays(fr, q, s)
    positive = s > 0
    g = np.where(positive, (1.0 - fr) * q / np.where(positive, s, 1.0), 0.0)
    z = inverse_normal_loss(g)
    return np.where(positive, np.maximum(z, 0.0) * s, 0.0)


def reorder_point(lead_time_demand_mean: ArrayLike, safety_stock: ArrayLike) -> np.ndarray:
    """Reorder point: expected lead-time demand plus safety stock."""
    return np.asarray(lead_time_demand_mean, dtype=float) + np.asarray(safety_stock, dtype=float)


def eoq(
    annual_demand: ArrayLike, order_cost: ArrayLike, holding_cost: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Economic order quantity sqrt(2 D K / h) and its annual ordering + holding cost sqrt(2 D K h).

    `holding_cost` is per unit per year (unit cost x holding-cost rate).
    """
    d = _arr(annual_demand, "annual demand")
    k = _arr(order_cost, "order cost", strict=True)
    h = _arr(holding_cost, "holding cost", strict=True)
    return np.sqrt(2.0 * d * k / h), np.sqrt(2.0 * d * k * h)


def newsvendor(
    mean: ArrayLike, sigma: ArrayLike, holding_cost: ArrayLike, shortage_cost: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Order-up-to level and expected cost for one period of normal demand.

    Critical ratio p / (p + h); S = mean + z * sigma; expected cost = (h + p) * sigma * phi(z).
    """
    mu = _arr(mean, "mean demand")
    sd = _arr(sigma, "demand standard deviation")
    h = _arr(holding_cost, "holding cost", strict=True)
    p = _arr(shortage_cost, "shortage cost", strict=True)
    z = norm.ppf(p / (p + h))
    return mu + z * sd, (h + p) * sd * norm.pdf(z)


def round_to_pack(quantity: ArrayLike, pack_size: ArrayLike = 1.0, moq: ArrayLike = 0.0) -> np.ndarray:
    """Round positive quantities up to whole packs and to at least the minimum order quantity.

    Zero stays zero; the MOQ itself is rounded up to whole packs.
    """
    q = _arr(quantity, "order quantity", min_value=None)
    pack = _arr(pack_size, "pack size", strict=True)
    m = _arr(moq, "minimum order quantity")
    packs = np.ceil(np.maximum(q, m) / pack - 1e-9) * pack
    return np.where(q > 0, packs, 0.0)


def stockout_probability(position: ArrayLike, ltd_mean: ArrayLike, ltd_std: ArrayLike) -> np.ndarray:
    """P(lead-time demand > position) under a normal lead-time demand (0/1 when the std is 0)."""
    x = np.asarray(position, dtype=float)
    m = np.asarray(ltd_mean, dtype=float)
    s = np.asarray(ltd_std, dtype=float)
    x, m, s = np.broadcast_arrays(x, m, s)
    positive = s > 0
    prob = norm.sf((x - m) / np.where(positive, s, 1.0))
    return np.where(positive, prob, (m > x).astype(float))
