"""The shop's set of existing order numbers: a deterministic stand-in for an order-database export.

The pipeline's `find_orders` step checks candidate numbers against a Bloom filter built from
`order_numbers()`. Here they are about a million 8-digit numbers drawn from a fixed seed, so every
checkout builds exactly the same set.

A real shop swaps in its own export: write one order number per line to a text file and point
`TRIAGE_ORDERS_FILE` at it (for example `psql -Atc "select order_no from orders" > orders.txt`).
`builder.build_artifacts()` then builds the Bloom filter from that file instead, and the manifest
records its hash, so the filter is rebuilt whenever the export changes.
"""

import numpy as np

SEED = 20261126
COUNT = 1_000_000


def order_numbers(seed: int = SEED, count: int = COUNT) -> list[str]:
    """`count` distinct 8-digit order numbers (as strings), the same for the same seed."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(np.arange(10_000_000, 100_000_000, dtype=np.int64), size=count, replace=False)
    return [str(n) for n in numbers]


if __name__ == "__main__":
    for number in order_numbers()[:20]:
        print(number)
