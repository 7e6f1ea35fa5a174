# Every command of the project, in one place. `.venv/bin/snakemake -c2 <rule or file>`; `-l` lists them.
import os
import shutil
import signal
import sys

# The rules call `python`: the interpreter running Snakemake (the venv's) comes first, activated or not.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

configfile: "config.yaml"

# What the pipeline declares (model.py and recipe.py, through the contract): its data files and labelled sets.
import model
import recipe
from building import contract

SETS = [os.path.relpath(path) for path in contract.labelled_sets().values()]  # the first one is the evaluation set
DATA = list(dict.fromkeys([*(os.path.relpath(model.DATA_DIR / file) for file in recipe.DATA.values()), *SETS]))
ARTIFACTS = ["artifacts/manifest.json"]  # written last, it lists every other artifact file with its size and SHA-256
STORE = os.path.relpath(os.environ.get("TRIAGE_EDGE_CASES") or model.DATA_DIR / "edge_cases.csv")  # the suite (loop/edge_cases.py)
SUITE = [STORE] if os.path.exists(STORE) else []  # a new fork has none yet: no cases, nothing to wait for


rule all:
    input:
        ARTIFACTS,
        ["reports/eval_metrics.json"] if SETS else [],


rule artifacts:
    """What the pipeline's steps run on (recipe.py), built from data/, and the manifest."""
    input:
        DATA,
        local(["model.py", "recipe.py", "building/builder.py", "building/encoders.py"]),  # code ships with the container image, not through cluster storage
    output:
        ARTIFACTS,
    shell:
        "python -m building build"


if SETS:  # a pipeline without a label has no metrics

    rule eval:
        """Accuracy and macro-F1 of the whole pipeline on the evaluation set (the first labelled set)."""
        input:
            ARTIFACTS,
            SETS[0],
        output:
            "reports/eval_metrics.json",
        shell:
            "python -m building eval > {output}"


rule candidate:
    """A candidate version from data/ and the suite's training examples, in versions/ beside the served one; then
    judge it: python -m loop gate NAME (promote and rollback are commands, never a side effect of a workflow)."""
    input:
        ARTIFACTS,
        SUITE,
    shell:
        "python -m loop candidate"


rule test:
    """The test suite (the README's test command)."""
    shell:
        "python -m pytest -q"


def smoke_url(wildcards):
    """Checked before any job starts: which deployment to smoke-test."""
    if not config.get("url"):
        raise WorkflowError("which deployment? snakemake -c1 smoke --config url=https://<user>-<space>.hf.space")
    return config["url"]


rule smoke:
    """The smoke tests against a deployment (--config url=...; LIT_SERVER_API_KEY from the environment when it has one)."""
    params:
        url=smoke_url,
    shell:
        "TRIAGE_SMOKE_URL={params.url:q} python -m pytest -m smoke"


if "serve" in sys.argv[1:]:  # Ctrl-C belongs to the server (it drains and stops with one line), so the rule ends done
    signal.signal(signal.SIGINT, signal.SIG_IGN)


rule serve:
    """The one server: API and app on http://localhost:7860 (blocks until Ctrl-C)."""
    input:
        ARTIFACTS,
    shell:
        "python app/main.py --port {config[port]}"


rule bench:
    """Every benchmark; method and results are written up in bench/RESULTS.md."""
    input:
        "bench/out/encoders.json",
        "bench/out/pipeline.json",
        "bench/out/batch.json",
        "bench/out/api.json",
        "bench/out/health.json",
        "bench/out/scaling.md",


rule bench_encoders:
    """The encoders side by side: accuracy, speed, memory, load and build time (bench/RESULTS.md, section 0)."""
    input:
        DATA,
        "bench/bench_encoders.py",
    output:
        "bench/out/encoders.json",
    shell:
        "python bench/bench_encoders.py > {output}"


rule bench_pipeline:
    """run_batch against a loop of run on 512 inputs."""
    input:
        ARTIFACTS,
    output:
        "bench/out/pipeline.json",
    shell:
        "python bench/bench_pipeline.py --tickets {config[bench_tickets]} > {output}"


rule bench_batch:
    """batch.py against in-process run_batch, its peak memory by input size, and sharding."""
    input:
        ARTIFACTS,
    output:
        "bench/out/batch.json",
    shell:
        "python bench/bench_batch.py > {output}"


def needs_wrk(wildcards):
    """Checked before any job starts: the API benchmarks load the server with wrk."""
    if not shutil.which("wrk"):
        raise WorkflowError("the API benchmarks need wrk: apt-get install -y wrk")
    return []


rule bench_api:
    """The LitServe API under 32 concurrent clients against run_batch, run and a plain FastAPI wrapper."""
    input:
        ARTIFACTS,
        needs_wrk,
    output:
        "bench/out/api.json",
    shell:
        "python bench/bench_api.py > {output}"


rule bench_scaling:
    """API throughput against TRIAGE_WORKERS (1 and 2 here; --workers 1 2 4 8 16 on a bigger machine), beside run_batch."""
    input:
        ARTIFACTS,
        needs_wrk,
    output:
        "bench/out/scaling.md",
    shell:
        "python bench/bench_scaling.py > {output}"


rule bench_health:
    """/health's latency under 300 clients, on the main port and the probe port, beside the commit before issue 15."""
    input:
        ARTIFACTS,
    output:
        "bench/out/health.json",
    shell:
        "python bench/bench_health.py --ref a843340 > {output}"


# --- batch reports -----------------------------------------------------------------------------
wildcard_constraints:
    name=r"[^/.]+",


scattergather:
    split=config["shards"],


IN, OUT, SHARDS = config["inputs"], config["reports"], config["shards_dir"]
BATCH = f"python {workflow.basedir}/batch.py"


rule report:
    """reports/{name}.csv, .html and .json from data/{name}.csv (the expert report)."""
    input:
        csv=f"{IN}/{{name}}.csv",
        artifacts=ARTIFACTS,
    output:
        multiext(f"{OUT}/{{name}}", ".csv", ".html", ".json"),
    shell:
        BATCH + " {input.csv} -o {output[0]} --quiet --resume {config[report_args]}"


rule regressions:
    """Every edge case (the suite: data/edge_cases.csv or TRIAGE_EDGE_CASES) against the pipeline now: reports/edge_cases.csv,
    .html and .json."""
    input:
        ARTIFACTS,
        SUITE,
    output:
        multiext(f"{OUT}/edge_cases", ".csv", ".html", ".json"),
    shell:
        BATCH + " --cases -o {output[0]}"


ruleorder: regressions > report


rule split:
    """Split data/{name}.csv into N contiguous shards (N: config shards, or --set-scatter split=N)."""
    input:
        f"{IN}/{{name}}.csv",
    output:
        scatter.split(f"{SHARDS}/{{{{name}}}}/{{scatteritem}}.csv"),
    run:
        import batch

        batch.split(input[0], output)


rule score_shard:
    """One shard scored on its own (in parallel with the others, locally or on a cluster)."""
    input:
        csv=f"{SHARDS}/{{name}}/{{scatteritem}}.csv",
        artifacts=ARTIFACTS,
    output:
        multiext(f"{SHARDS}/{{name}}/{{scatteritem}}.scored", ".csv", ".json"),
    shell:
        BATCH + " {input.csv} -o {output[0]} --quiet --no-html --resume {config[report_args]}"


rule merge:
    """reports/{name}.sharded.*: the shards merged into one report, same rows and order as `report`."""
    input:
        gather.split(f"{SHARDS}/{{{{name}}}}/{{scatteritem}}.scored.csv"),
    output:
        multiext(f"{OUT}/{{name}}.sharded", ".csv", ".html", ".json"),
    shell:
        BATCH + " --merge {input} -o {output[0]} --quiet"
