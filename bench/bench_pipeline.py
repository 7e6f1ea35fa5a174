"""run_batch against a loop of run, side by side in one process, on the same 512 tickets.

    python bench/bench_pipeline.py [--tickets 512] [--repeats 3]

Method: tickets are the texts of data/train.csv and data/eval.csv, cycled to N. The model and
artifacts are loaded and warmed first. Each repeat times a loop of `model.run` over all N, then one
`model.run_batch` call over all N (debug off, default flags); the best repeat of each is reported,
as tickets per second, with the ratio. Prints one JSON line.
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import model
from building import builder

STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


def tickets(n: int) -> list[str]:
    texts = pd.concat([pd.read_csv(model.DATA_DIR / f"{name}.csv").text for name in ("eval", "train")])
    return list(itertools.islice(itertools.cycle(texts), n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = tickets(args.tickets)
    stage("loading the pipeline")
    builder.ready()
    model.run_batch(texts[:64])  # load and warm up
    loop, batch = [], []
    for repeat in range(args.repeats):
        stage(f"repeat {repeat + 1} of {args.repeats}: {len(texts)} tickets one at a time, then in one run_batch")
        start = time.perf_counter()
        for text in texts:
            model.run(text)
        loop.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.run_batch(texts)
        batch.append(time.perf_counter() - start)
    result = {
        "tickets": len(texts),
        "repeats": args.repeats,
        "run_loop_per_s": round(len(texts) / min(loop), 1),
        "run_batch_per_s": round(len(texts) / min(batch), 1),
    }
    result["ratio"] = round(result["run_batch_per_s"] / result["run_loop_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
