"""/health under load: how long a load balancer's probe waits while many clients call /predict.

    python bench/bench_health.py [--clients 300] [--seconds 20] [--ref a843340]

Method (one run, one machine, side by side): `python app/main.py --no-ui` of this working tree and, with
`--ref`, of an earlier commit (checked out into a temporary git worktree, same virtual environment, its own
artifacts). For each: `--clients` concurrent httpx clients post tickets (texts of data/eval.csv, cycled) to
/predict for `--seconds`, while one more client probes /health every 0.25 s with a 10 s timeout, on the main
port and, where the server has one (TRIAGE_PROBE_PORT), on the probe port. Reported: each probe's latency
(p50, p99, max, and how many took over 1 s, Kubernetes' default probe timeout, or failed), their status
codes, and the /predict answers by status. The load generator shares the cores with
the server. Prints one JSON object.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, probe_url: str, clients: int, seconds: float) -> dict:
    texts = list(pd.read_csv(ROOT / "data" / "eval.csv", dtype=str).text)
    stop = time.monotonic() + seconds
    answers: Counter = Counter()

    async def client(http: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < stop:
            try:
                response = await http.post(f"{url}/predict", json={"text": texts[i % len(texts)]}, timeout=60)
                answers[response.status_code] += 1
            except httpx.HTTPError as error:
                answers[type(error).__name__] += 1
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        with ProcessPoolExecutor(2) as pool:  # probes from processes of their own: the clients' event loop is busy
            probes = {where: pool.submit(probe, base, seconds) for where, base in (("main port", url), ("probe port", probe_url))}
            await asyncio.gather(*(client(http, i) for i in range(clients)))
            probes = {where: summary(future.result()) for where, future in probes.items()}
    return {**probes, "predict_answers": {str(k): v for k, v in answers.items()}}


def probe(base: str, seconds: float) -> list[tuple[float, str]]:
    """GET /health every 0.25 s for `seconds`: (seconds taken, status or error)."""
    seen, stop = [], time.monotonic() + seconds
    with httpx.Client() as http:
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status = str(http.get(f"{base}/health", timeout=10).status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            seen.append((time.perf_counter() - start, status))
            time.sleep(0.25)
    return seen


def summary(probes: list[tuple[float, str]]) -> dict:
    seconds = sorted(s for s, _ in probes)
    return {
        "probes": len(probes),
        "p50_s": round(statistics.median(seconds), 3),
        "p99_s": round(seconds[int(0.99 * (len(seconds) - 1))], 3),
        "max_s": round(seconds[-1], 3),
        "over_1s_or_failed": sum(s > 1 or not status.isdigit() for s, status in probes),
        "status": dict(Counter(status for _, status in probes)),
    }


def measure(tree: Path, clients: int, seconds: float) -> dict:
    port, probe_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TRIAGE_EDGE_CASES": str(Path(tempfile.mkdtemp()) / "cases.csv"), "TRIAGE_PROBE_PORT": str(probe_port)}
    server = subprocess.Popen([sys.executable, "app/main.py", "--no-ui", "--host", "127.0.0.1", "--port", str(port)], cwd=tree, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{tree}: the server did not become healthy")
        return asyncio.run(load(url, f"http://127.0.0.1:{probe_port}", clients, seconds))
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--ref", help="an earlier commit to measure beside this working tree")
    args = parser.parse_args()
    stage(f"this tree: starting the server, then {args.clients} clients for {args.seconds} s")
    results = {"clients": args.clients, "seconds": args.seconds, "this tree": measure(ROOT, args.clients, args.seconds)}
    if args.ref:
        stage(f"{args.ref}: a worktree, the server, then {args.clients} clients for {args.seconds} s")
        with tempfile.TemporaryDirectory() as tmp:
            worktree = Path(tmp) / "ref"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.ref], cwd=ROOT, check=True, capture_output=True)
            try:
                results[args.ref] = measure(worktree, args.clients, args.seconds)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False, capture_output=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
