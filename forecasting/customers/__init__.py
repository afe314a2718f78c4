"""Customer analytics on invoice lines: segments, lifetime value, churn, recommendations, unusual orders.

Start from `clean_transactions(df, TransactionColumns(...))`; every estimator takes the resulting
`Transactions` (or features computed from it) and follows scikit-learn habits: parameters in
`__init__`, `fit` returns self, fitted state ends in `_`.
"""

from forecasting.customers.anomalies import OrderAnomalyDetector
from forecasting.customers.churn import ChurnModel, evaluate_churn
from forecasting.customers.clv import BetaGeoNBD, GammaGamma, LifetimeValueModel, evaluate_holdout
from forecasting.customers.recommend import (
    ContentRecommender,
    HybridRecommender,
    ItemItemRecommender,
    PopularityRecommender,
    evaluate_recommenders,
)
from forecasting.customers.rfm import FEATURES, customer_features
from forecasting.customers.segments import CustomerSegmenter
from forecasting.customers.transactions import TransactionColumns, Transactions, clean_transactions

__all__ = [
    "FEATURES",
    "BetaGeoNBD",
    "ChurnModel",
    "ContentRecommender",
    "CustomerSegmenter",
    "GammaGamma",
    "HybridRecommender",
    "ItemItemRecommender",
    "LifetimeValueModel",
    "OrderAnomalyDetector",
    "PopularityRecommender",
    "TransactionColumns",
    "Transactions",
    "clean_transactions",
    "customer_features",
    "evaluate_churn",
    "evaluate_holdout",
    "evaluate_recommenders",
]
