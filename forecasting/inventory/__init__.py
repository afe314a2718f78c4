"""Inventory and procurement numbers: policy formulas, lead times, ABC/XYZ, stock-out
runs in sales history, order advice, simulation."""
