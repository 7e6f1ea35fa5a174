"""batch.py against in-process run_batch, its memory as the input grows, and the sharded Snakemake run.

    python bench/bench_batch.py [--rows 20000] [--rounds 2] [--memory-rows 10000 100000] [--shard-rows 10000]
                                [--parts throughput memory scale_out report_size] [--size-rows 40 1000]

Method (one run, one machine, side by side):
- throughput: the same N-row CSV (texts of data/eval.csv and data/train.csv, cycled) scored by one
  in-process `model.run_batch` call over all N texts, then by `python batch.py` in a subprocess;
  batch.py's figure is its own scoring rate (rows / scoring seconds, the model already loaded) and,
  for reference, rows / wall seconds of the whole command including start-up.
- memory: peak RSS (ru_maxrss) of a fresh process running batch.main() on each size.
- scale-out: `snakemake -c2 <name>.sharded.csv` with split=1 and split=2 on the same rows, wall time.
- report_size: the HTML report of N labelled rows, compared with B (top_k=1, min_confidence=0.9), in bytes, drawn
  three ways from the same summary: plotly's figures with plotly.js inlined (before issue 19), the same with plotly.js
  gzipped and base64-encoded (a page would decode it with the browser's DecompressionStream before drawing), and
  the figures in HTML and CSS (`reports.charts`, what batch.py writes now).
Prints one JSON object.
"""

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import model  # noqa: E402
from building import builder  # noqa: E402

OUT = ROOT / "bench" / "out"


STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


def make_csv(rows: int) -> Path:
    path = OUT / f"rows{rows}.csv"
    if not path.exists():
        frame = pd.concat([pd.read_csv(model.DATA_DIR / f"{n}.csv") for n in ("eval", "train")])
        frame = frame.assign(expected_category=frame.expected_category.fillna(frame.category))[["text", "expected_category"]]
        cycled = list(itertools.islice(itertools.cycle(frame.itertuples(index=False)), rows))
        pd.DataFrame(cycled).to_csv(path, index=False)
    return path


def throughput(rows: int, rounds: int) -> dict:
    path = make_csv(rows)
    texts = pd.read_csv(path).text.tolist()
    model.run_batch(texts[:64])
    in_process, wall, scoring = [], [], []
    for _ in range(rounds):  # alternate, best of each: the machine is shared and noisy
        start = time.perf_counter()
        model.run_batch(texts)
        in_process.append(rows / (time.perf_counter() - start))
        start = time.perf_counter()
        cmd = [sys.executable, "batch.py", str(path), "-o", str(OUT / "throughput.csv"), "--quiet", "--no-html"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall.append(rows / (time.perf_counter() - start))
        scoring.append(json.loads((OUT / "throughput.json").read_text())["rows_per_s"])
    in_process, wall, scoring = max(in_process), max(wall), max(scoring)
    return {
        "rounds": rounds,
        "rows": rows,
        "run_batch_per_s": round(in_process, 1),
        "batch_py_scoring_per_s": scoring,
        "batch_py_wall_per_s": round(wall, 1),
        "ratio_scoring": round(scoring / in_process, 3),
        "ratio_wall": round(wall / in_process, 3),
    }


def peak_rss_mb(rows: int) -> float:
    code = (
        "import resource, sys, batch; "
        f"batch.main([{str(make_csv(rows))!r}, '-o', {str(OUT / 'memory.csv')!r}, '--quiet', '--no-html']); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return round(int(out.split()[-1]) / 1024, 1)


def sharded_wall_s(rows: int, shards: int) -> float:
    make_csv(rows)
    for path in (OUT / "shards", OUT / "reports"):
        shutil.rmtree(path, ignore_errors=True)
    config = [f"inputs={OUT}", f"reports={OUT}/reports", f"shards_dir={OUT}/shards"]
    target = f"{OUT}/reports/rows{rows}.sharded.csv"
    start = time.perf_counter()
    cmd = ["snakemake", "-c2", target, "--set-scatter", f"split={shards}", "--config", *config, "--quiet", "all"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return round(time.perf_counter() - start, 1)


def report_sizes(rows: int) -> dict:
    import base64
    import gzip

    import plotly.offline

    import batch
    from reporting import reports

    summary = batch.report(make_csv(rows), OUT / f"size{rows}.csv", compare={"top_k": 1, "min_confidence": 0.9}, progress=False)
    page = (OUT / f"size{rows}.html").read_bytes()
    charts = len(page[page.index(b"<figure") : page.rindex(b"</figure>") + len(b"</figure>")])
    plotly_js = plotly.offline.get_plotlyjs().encode()
    figures = sum(len(f.to_html(full_html=False, include_plotlyjs=False).encode()) for f in reports.figures(summary))
    loader = 400  # a script that decodes the base64, decompresses it, then draws each figure
    packed = len(base64.b64encode(gzip.compress(plotly_js, 9)))
    return {
        "rows": rows,
        "plotly_inlined": len(page) - charts + figures + len(plotly_js),
        "plotly_gzip_base64": len(page) - charts + figures + packed + loader,
        "html_css": len(page),
        "of_which_figures": {"plotly_divs": figures, "html_css": charts},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--memory-rows", type=int, nargs=2, default=[10_000, 100_000])
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["throughput", "memory", "scale_out", "report_size"])
    parser.add_argument("--size-rows", type=int, nargs="+", default=[40, 1000])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stage("loading the pipeline")
    builder.ready()
    result = {}
    if "throughput" in args.parts:
        stage(f"throughput: {args.rows} rows, in process and through batch.py, {args.rounds} rounds")
        result["throughput"] = throughput(args.rows, args.rounds)
    if "memory" in args.parts:
        stage(f"memory: peak RSS of batch.py on {' and '.join(map(str, args.memory_rows))} rows")
        small, large = (peak_rss_mb(n) for n in args.memory_rows)
        result["memory"] = {"rows": args.memory_rows, "peak_rss_mb": [small, large], "ratio": round(large / small, 3)}
    if "scale_out" in args.parts:
        stage(f"scale-out: snakemake on {args.shard_rows} rows in 1 shard, then 2")
        one, two = sharded_wall_s(args.shard_rows, 1), sharded_wall_s(args.shard_rows, 2)
        result["scale_out"] = {"rows": args.shard_rows, "wall_s_1_shard": one, "wall_s_2_shards": two, "speedup": round(one / two, 3)}
    if "report_size" in args.parts:
        stage(f"report size: HTML reports of {' and '.join(map(str, args.size_rows))} rows")
        result["report_size"] = [report_sizes(n) for n in args.size_rows]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
