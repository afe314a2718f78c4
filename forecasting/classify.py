"""Demand classification by ADI and CV^2 (Syntetos-Boylan), per series."""

from __future__ import annotations

import numpy as np
import pandas as pd

ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
CLASSES = ("smooth", "erratic", "intermittent", "lumpy")


def classify_demand(df: pd.DataFrame) -> pd.DataFrame:
    """Return one row per series: adi, cv2, nonzero share and demand_class.

    ADI is the average interval between non-zero demands over the series' history (periods / number
    of non-zero periods); CV^2 is the squared coefficient of variation of the non-zero demand sizes.
    smooth: ADI < 1.32 and CV^2 < 0.49; erratic: ADI < 1.32, CV^2 >= 0.49; intermittent: ADI >= 1.32,
    CV^2 < 0.49; lumpy: both above. A series with no demand at all is "intermittent" with ADI inf.
    """
    g = df.groupby("unique_id", sort=True)["y"]
    n = g.size()
    nz = df[df["y"] > 0].groupby("unique_id", sort=True)["y"]
    n_nonzero = nz.size().reindex(n.index, fill_value=0)
    mean_nz = nz.mean().reindex(n.index)
    std_nz = nz.std(ddof=0).reindex(n.index)
    adi = (n / n_nonzero.replace(0, np.nan)).fillna(np.inf)
    cv2 = ((std_nz / mean_nz) ** 2).fillna(0.0)
    smooth_interval = adi < ADI_CUTOFF
    low_var = cv2 < CV2_CUTOFF
    demand_class = np.select(
        [smooth_interval & low_var, smooth_interval & ~low_var, ~smooth_interval & low_var],
        ["smooth", "erratic", "intermittent"],
        default="lumpy",
    )
    demand_class = np.where(n_nonzero.to_numpy() == 0, "intermittent", demand_class)
    return pd.DataFrame(
        {
            "unique_id": n.index.astype(str),
            "n_periods": n.to_numpy(),
            "nonzero_share": (n_nonzero / n).to_numpy(),
            "adi": adi.to_numpy(),
            "cv2": cv2.to_numpy(),
            "demand_class": demand_class,
        }
    )


def class_counts(classes: pd.DataFrame) -> dict[str, int]:
    counts = classes["demand_class"].value_counts()
    return {c: int(counts.get(c, 0)) for c in CLASSES}
