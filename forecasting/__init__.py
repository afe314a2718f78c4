"""Demand forecasting, inventory numbers and customer analytics for StockPilot."""
