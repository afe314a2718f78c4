"""Inventory and procurement numbers: policy formulas, lead times, ABC/XYZ, order advice, simulation."""
