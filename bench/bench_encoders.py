"""The three encoders side by side: accuracy, build time, load time, memory, run_batch and run speed.

    python bench/bench_encoders.py [--tickets 512] [--rounds 3]

Method: for each encoder (TRIAGE_ENCODER = torch, onnx, onnx-int8), `python -m building build` into an
artifacts folder of its own under bench/out/ (cold: ONNX export and quantization included; its
wall time is the cold build) gives the accuracy and macro-F1 on data/eval.csv. Then, in rounds that
alternate the encoders (the machine is shared and noisy), a fresh process per encoder imports
model.py, loads everything (seconds, and peak RSS after loading), warms up, times one `run_batch`
over N tickets (the texts of data/eval.csv and data/train.csv, cycled) and a loop of `run` over
the first 128 of them. Best round of each is kept; ratios are against torch. Prints one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "encoders"
ENCODERS = ("torch", "onnx", "onnx-int8")


STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


MEASURE = """
import itertools, json, resource, sys, time
start = time.perf_counter()
import pandas as pd, model
from building import builder
builder.ready()
load_s = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
texts = list(pd.concat([pd.read_csv(model.DATA_DIR / f"{n}.csv").text for n in ("eval", "train")]))
texts = list(itertools.islice(itertools.cycle(texts), int(sys.argv[1])))
model.run_batch(texts[:64]); [model.run(t) for t in texts[:8]]
start = time.perf_counter(); model.run_batch(texts); batch = len(texts) / (time.perf_counter() - start)
start = time.perf_counter(); [model.run(t) for t in texts[:128]]; single = 128 / (time.perf_counter() - start)
print(json.dumps({"load_s": load_s, "rss_mb": rss_mb, "run_batch_per_s": batch, "run_per_s": single,
                  "torch_imported": "torch" in sys.modules}))
"""


def env(encoder: str) -> dict:
    return {**os.environ, "TRIAGE_ENCODER": encoder, "TRIAGE_ARTIFACTS_DIR": str(OUT / encoder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for encoder in ENCODERS:
        (OUT / encoder).mkdir(parents=True, exist_ok=True)
        for old in (OUT / encoder).iterdir():
            old.unlink()
        stage(f"{encoder}: building the artifacts from nothing")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "building", "build"], cwd=ROOT, env=env(encoder), check=True, capture_output=True)
        manifest = json.loads((OUT / encoder / "manifest.json").read_text())
        results[encoder] = {
            "cold_build_s": round(time.perf_counter() - start, 1),
            "accuracy": manifest["eval"]["accuracy"],
            "macro_f1": manifest["eval"]["macro_f1"],
            "encoder_mb": round((OUT / encoder / "encoder.onnx").stat().st_size / 1e6, 1) if encoder != "torch" else None,
        }
    rounds = {encoder: [] for encoder in ENCODERS}
    for k in range(args.rounds):
        for encoder in ENCODERS:
            stage(f"round {k + 1} of {args.rounds}: {encoder}, load and score {args.tickets} tickets")
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(args.tickets)], cwd=ROOT, env=env(encoder), check=True, capture_output=True, text=True
            ).stdout
            rounds[encoder].append(json.loads(out.strip().splitlines()[-1]))
    for encoder, measured in rounds.items():
        results[encoder].update(
            run_batch_per_s=round(max(m["run_batch_per_s"] for m in measured), 1),
            run_per_s=round(max(m["run_per_s"] for m in measured), 1),
            load_s=round(min(m["load_s"] for m in measured), 2),
            rss_mb_after_load=round(min(m["rss_mb"] for m in measured)),
            torch_imported=measured[0]["torch_imported"],
        )
    for encoder in ENCODERS:
        for figure in ("run_batch_per_s", "run_per_s"):
            results[encoder][f"{figure}_vs_torch"] = round(results[encoder][figure] / results["torch"][figure], 2)
    print(json.dumps({"tickets": args.tickets, "rounds": args.rounds, "encoders": results}, indent=2))


if __name__ == "__main__":
    main()
