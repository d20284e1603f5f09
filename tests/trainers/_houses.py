"""The house-price CSV files of `examples/data/`, shared by the trainers in this package."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2] / "examples" / "data"
TRAIN_FILE = DATA_DIR / "houses_train.csv"
EVAL_FILE = DATA_DIR / "houses_eval.csv"

LABEL = "price"
CSV_COLUMNS = ["sqft", "bedrooms", "age", "neighborhood", "has_garage", LABEL]
NEIGHBORHOODS = ["downtown", "riverside", "suburbs", "hills", "industrial"]
# Numeric features: mean and standard deviation over houses_train.csv (has_garage is 0/1 and
# left as is), fixed so that a trainer given an empty train glob can still build its model.
STATS = {
    "sqft": (1819.55, 645.08),
    "bedrooms": (2.8, 1.2),
    "age": (27.62, 19.45),
    "has_garage": (0.0, 1.0),
}


def load(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(features [n, 9], price [n]): 4 standardized numbers and 5 one-hot neighborhoods."""
    features, prices = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            numbers = [(float(row[k]) - m) / s for k, (m, s) in STATS.items()]
            hood = [float(row["neighborhood"] == name) for name in NEIGHBORHOODS]
            features.append(numbers + hood)
            prices.append(float(row[LABEL]))
    return np.array(features, np.float32), np.array(prices, np.float32)
