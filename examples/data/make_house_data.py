"""Generate the small synthetic house-price CSVs shared by the example trainers.

Deterministic (seeded numpy), so re-running it reproduces the committed files byte for byte:

    python examples/data/make_house_data.py            # writes next to this script
    python examples/data/make_house_data.py --out-dir /tmp/houses --seed 1

Columns: sqft (float), bedrooms (int), age (float, years), neighborhood (string, 5 values),
has_garage (0/1) and the label price (in $100k, roughly 1-10, with noise).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

COLUMNS = ["sqft", "bedrooms", "age", "neighborhood", "has_garage", "price"]
#: Neighborhood -> price multiplier.
NEIGHBORHOODS = {
    "downtown": 1.35,
    "riverside": 1.15,
    "suburbs": 1.0,
    "hills": 1.25,
    "industrial": 0.75,
}


def make_rows(n: int, rng: np.random.Generator) -> list[list[object]]:
    """Draw `n` houses; the price is a nonlinear function of the features plus noise."""
    names = list(NEIGHBORHOODS)
    sqft = np.clip(rng.lognormal(mean=np.log(1700.0), sigma=0.35, size=n), 500.0, 4500.0)
    bedrooms = np.clip(np.round(sqft / 650.0 + rng.normal(0.0, 0.7, size=n)), 1, 6).astype(int)
    age = np.clip(rng.gamma(shape=2.0, scale=14.0, size=n), 0.0, 100.0)
    hood = rng.choice(len(names), size=n, p=[0.15, 0.2, 0.35, 0.15, 0.15])
    garage = (rng.random(n) < 0.3 + 0.1 * np.minimum(bedrooms, 4)).astype(int)

    mult = np.array([NEIGHBORHOODS[names[i]] for i in hood])
    # Diminishing returns on size, a U-shaped age effect (old houses regain value as
    # "historic"), a bedroom count that only helps up to a point, and a garage bonus.
    base = 2.2 * (sqft / 1000.0) ** 0.85
    age_effect = -0.035 * age + 0.00035 * age**2
    bed_effect = 0.25 * bedrooms - 0.04 * bedrooms**2
    price = mult * (base + age_effect + bed_effect + 0.45 * garage + 0.6)
    price = price + rng.normal(0.0, 0.25, size=n)
    price = np.clip(price, 0.5, 12.0)

    return [
        [
            f"{sqft[i]:.0f}",
            int(bedrooms[i]),
            f"{age[i]:.1f}",
            names[hood[i]],
            int(garage[i]),
            f"{price[i]:.3f}",
        ]
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[list[object]]) -> None:
    """Write `rows` with a header line."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=500)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    rows = make_rows(args.train_rows + args.eval_rows, rng)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "houses_train.csv", rows[: args.train_rows])
    write_csv(args.out_dir / "houses_eval.csv", rows[args.train_rows :])
    print(f"wrote {args.train_rows} + {args.eval_rows} rows to {args.out_dir}")


if __name__ == "__main__":
    main()
