"""Customer analytics on invoice lines: segments, lifetime value, churn, recommendations, unusual orders.

Start from `clean_transactions(df, TransactionColumns(...))`; every estimator takes the resulting
`Transactions` (or features computed from it) and follows scikit-learn habits: parameters in
`__init__`, `fit` returns self, fitted state ends in `_`. Names are imported lazily, so importing one
submodule (e.g. for the command line) does not load scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OrderAnomalyDetector": "anomalies",
    "ChurnModel": "churn",
    "evaluate_churn": "churn",
    "BetaGeoNBD": "clv",
    "GammaGamma": "clv",
    "LifetimeValueModel": "clv",
    "evaluate_holdout": "clv",
    "ContentRecommender": "recommend",
    "HybridRecommender": "recommend",
    "ItemItemRecommender": "recommend",
    "PopularityRecommender": "recommend",
    "evaluate_recommenders": "recommend",
    "FEATURES": "rfm",
    "customer_features": "rfm",
    "compare_segment_forecasts": "segment_demand",
    "CustomerSegmenter": "segments",
    "TransactionColumns": "transactions",
    "Transactions": "transactions",
    "clean_transactions": "transactions",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
