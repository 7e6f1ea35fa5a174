"""The scatter-gather report on a real Slurm cluster: one node on this machine, started and stopped here.

Needs root and Debian's `slurm-wlm` and `munge` (README's set-up and .ci/run install them); deselect
locally with `-m "not slurm"`. Snakemake runs through `--profile profiles/slurm`, as on a real cluster,
with job status from squeue (there is no accounting database) and under `timeout -s KILL`: the Slurm
executor plugin ignores SIGTERM when it cannot get a status.
"""

import shutil
import subprocess

import pandas as pd
import psutil
import pytest
from conftest import SNAKEMAKE, with_this_python

import model
from building import contract

pytestmark = pytest.mark.slurm
ROOT = model.ROOT
CLUSTER = ROOT / "profiles" / "slurm" / "local" / "cluster.sh"
SLURM = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("slurmctld") is None:
        pytest.fail("Slurm is not installed: apt-get install -y slurm-wlm munge (or deselect these tests: -m 'not slurm')")
    state = tmp_path_factory.mktemp("slurm")
    try:
        subprocess.run([CLUSTER, "start", state], check=True, timeout=60)
        yield state
    finally:
        subprocess.run([CLUSTER, "stop", state], check=True, timeout=60)
    left = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if str(state) in " ".join(p.info["cmdline"] or [])]
    assert not left, f"daemons left running: {left}"


def snakemake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = ["timeout", "-s", "KILL", str(timeout), *SNAKEMAKE, *args]
    return subprocess.run(command, cwd=ROOT, env=with_this_python(), capture_output=True, text=True)


def folders(tmp_path) -> list[str]:
    return ["--config", f"inputs={tmp_path}/in", f"reports={tmp_path}/out", f"shards_dir={tmp_path}/shards"]


def test_the_sharded_report_on_slurm_equals_the_local_report(cluster, tmp_path):
    (tmp_path / "in").mkdir()
    (labelled, *_) = contract.labelled_sets().values()  # the evaluation set's first 40 rows: its inputs and right answers
    rows = pd.read_csv(labelled, dtype=str, keep_default_na=False).head(40)
    rows[[c for c in rows.columns if c in model.Input.model_fields or c == contract.expected_column()]].to_csv(
        tmp_path / "in" / "tiny.csv", index=False
    )
    target = f"{tmp_path}/out/tiny.sharded.csv"
    on_slurm = snakemake("--profile", "profiles/slurm", target, "--set-scatter", "split=2", *folders(tmp_path), *SLURM)
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
    local = snakemake("-c2", f"{tmp_path}/out/tiny.csv", *folders(tmp_path), "--quiet", "all")
    assert local.returncode == 0, local.stderr[-3000:]
    assert (tmp_path / "out" / "tiny.sharded.csv").read_bytes() == (tmp_path / "out" / "tiny.csv").read_bytes()
    submitted = (cluster / "slurmctld.log").read_text().count("_slurm_rpc_submit_batch_job: JobId=")
    assert submitted >= 4, "split, two shards and merge should each have been a Slurm job"  # none ran locally


@pytest.mark.shapeless
def test_a_failing_job_is_reported_as_failed(cluster, tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"message": ["no input column here"] * 4}).to_csv(tmp_path / "in" / "bad.csv", index=False)
    target = f"{tmp_path}/out/bad.sharded.csv"
    run = snakemake("--profile", "profiles/slurm", target, "--set-scatter", "split=2", *folders(tmp_path), *SLURM)
    assert run.returncode not in (0, -9, 137), "snakemake should fail by itself, not hang until killed"
    assert "SLURM status is: 'FAILED'" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "out" / "bad.sharded.csv").exists()
