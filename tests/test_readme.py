"""README.md stays true: every figure it quotes is checked here against what produces it.

Accuracy and macro-F1 come from the build (artifacts/manifest.json), the automatic-answer counts from running
the pipeline on data/eval.csv, the speed and memory figures from bench/RESULTS.md (written from the
benchmarks' output). A figure may be off by one ticket of 160 at most: another CPU's float rounding can flip one.
"""

import ast
import contextlib
import itertools
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import Server, free_port

import model
from building import builder

README = (model.ROOT / "README.md").read_text()
RESULTS = (model.ROOT / "bench" / "RESULTS.md").read_text()
ONE_TICKET = 1 / 160


def quoted(pattern: str) -> tuple[str, ...]:
    found = re.search(pattern, README)
    assert found, f"README.md no longer says: {pattern}"
    return found.groups()


def test_accuracy_and_macro_f1_are_the_builds():
    accuracy, macro_f1 = map(float, quoted(r"category accuracy is \*\*(0\.\d+)\*\* \(macro-F1 (0\.\d+)"))
    built = builder.ready().manifest["eval"]
    assert abs(accuracy - built["accuracy"]) <= ONE_TICKET and abs(macro_f1 - built["macro_f1"]) <= ONE_TICKET, built


def test_the_second_voice_figures_are_the_builds():
    accuracy, macro_f1 = map(float, quoted(r"in a story; [^*]*\)\s+it is \*\*(0\.\d+)\*\* \(macro-F1 (0\.\d+)\)"))
    built = builder.ready().manifest["eval_style"]
    assert abs(accuracy - built["accuracy"]) <= 1 / built["rows"] and abs(macro_f1 - built["macro_f1"]) <= 1 / built["rows"], built


@pytest.mark.parametrize(
    ("pattern", "flags"),
    [
        (r"With the default flags (\d+) of the 160 tickets are answered automatically, (\d+) of them misclassified", {}),
        (r"`min_article_score` at 0\.4: (\d+) answered, (\d+) misclassified", {"min_article_score": 0.4}),
    ],
)
def test_automatic_answer_counts_are_the_pipelines(pattern, flags):
    answered, wrong = map(int, quoted(pattern))
    frame = pd.read_csv(model.DATA_DIR / "eval.csv", dtype=str)
    results = model.run_batch(list(frame.text), flags)
    auto = [r.category.value != expected for r, expected in zip(results, frame.expected_category, strict=True) if not r.needs_human]
    assert abs(answered - len(auto)) <= 1 and abs(wrong - sum(auto)) <= 1, (len(auto), sum(auto))


def data_figures() -> dict[str, int]:
    """What data/ holds, counted the way each file lists it: an intent of data/INTENTS.md is a line "- `name`: ..."."""
    train, articles = pd.read_csv(model.DATA_DIR / "train.csv", dtype=str), pd.read_csv(model.DATA_DIR / "articles.csv", dtype=str)
    plain, style = pd.read_csv(model.DATA_DIR / "eval.csv", dtype=str), pd.read_csv(model.DATA_DIR / "eval_style.csv", dtype=str)
    listed = re.findall(r"^- `(\w+)`: ", (model.DATA_DIR / "INTENTS.md").read_text(), flags=re.MULTILINE)
    assert set(train.intent) == set(listed), "train.csv and INTENTS.md name different intents"
    (per_category,) = set(plain.expected_category.value_counts())  # as many of each category
    (style_per_category,) = set(style.expected_category.value_counts())
    orders = re.search(r"^COUNT = ([\d_]+)$", (model.DATA_DIR / "orders.py").read_text(), flags=re.MULTILINE)
    return {
        "categories": len(model.Category),
        "intents": len(listed),
        "train": len(train),
        "articles": len(articles),
        "eval": len(plain),
        "eval per category": per_category,
        "eval hard": int((plain.difficulty == "hard").sum()),
        "eval_style": len(style),
        "eval_style per category": style_per_category,
        "orders (millions)": int(orders.group(1)) // 1_000_000,
    }


README_DATA_FIGURES = [  # (where README gives figures, which counts of data_figures() they are)
    (r"one of (\d+) ", ["categories"]),
    (r"of (\d+)M orders", ["orders (millions)"]),
    (r"`data/INTENTS.md` \((\d+):", ["intents"]),
    (r"`data/train.csv` \((\d+) tickets", ["train"]),
    (r"train\.csv \((\d+) labelled tickets", ["train"]),
    (r"articles\.csv \((\d+) help-centre articles", ["articles"]),
    (r"`data/eval.csv`, (\d+) tickets, (\d+) per category, (\d+) of them hard cases", ["eval", "eval per category", "eval hard"]),
    (r"eval\.csv \((\d+) held-out tickets", ["eval"]),
    (r"\d+ of the (\d+) tickets are answered automatically", ["eval"]),
    (r"`data/eval_style.csv`, (\d+) tickets, (\d+) per category", ["eval_style", "eval_style per category"]),
]


@pytest.mark.parametrize(("pattern", "figures"), README_DATA_FIGURES, ids=[", ".join(f) for _, f in README_DATA_FIGURES])
def test_the_data_figures_are_the_data(pattern, figures):
    """Every count README gives of data/ (categories, intents, tickets, articles, orders) is what the files hold."""
    found = re.search(pattern, " ".join(README.split()))  # a figure and its words may be on two lines
    assert found, f"README.md no longer says: {pattern}"
    actual = data_figures()
    for quoted_figure, name in zip(found.groups(), figures, strict=True):
        assert int(quoted_figure) == actual[name], f"README says {quoted_figure} for {name}; data/ holds {actual[name]}"


def test_the_encoder_table_is_the_benchmarks():
    """Each row of README's encoder table appears, figure for figure, in bench/RESULTS.md's table."""
    rows = re.findall(r"^\| `(onnx-int8|onnx|torch)` \|(.+)\|$", README, flags=re.MULTILINE)
    assert {name for name, _ in rows} == set(builder.ENCODERS)
    for name, cells in rows:
        figures = re.findall(r"\d+(?:\.\d+)?", cells)
        result_row = re.search(rf"^\| `{re.escape(name)}` \|(.+)\|$", RESULTS, flags=re.MULTILINE)
        assert result_row, f"bench/RESULTS.md has no row for {name}"
        assert figures and all(f in re.findall(r"\d+(?:\.\d+)?", result_row.group(1)) for f in figures), (name, figures)


def test_the_front_door_fits_the_first_screen_of_a_terminal():
    """After the Space's front matter, a few lines of what it is and the commands (set-up, run, test, fast check), all
    within the first 50 rows of an 80-column terminal (`cat README.md`: a long line takes a row per 80 characters);
    then the table of contents."""
    lines = README.splitlines()
    ends = list(itertools.accumulate(max(1, math.ceil(len(line) / 80)) for line in lines))  # the row each line ends on
    for comment in ("# set-up", "# run:", "# test:", "# fast check:"):
        number = next(i for i, line in enumerate(lines) if comment in line and line.startswith(("apt-get", ".venv")))
        assert ends[number] <= 50, f"README's {comment} command ends on row {ends[number]} of an 80x50 terminal"
    assert README.index("```bash") < README.index("## Contents") < README.index("\n## ", README.index("## Contents") + 1)


def test_the_contents_list_every_section_with_a_working_link():
    """The table of contents names every `## ` section, in order, each linked by GitHub's anchor for its heading."""
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    contents = README[README.index("## Contents") : README.index("\n## ", README.index("## Contents") + 1)]
    listed = re.findall(r"^- \[(.+?)\]\(#(.+?)\)$", contents, flags=re.MULTILINE)
    assert [title for title, _ in listed] == [h for h in headings if h != "Contents"]
    for title, anchor in listed:  # GitHub: lower case, punctuation dropped, spaces to hyphens
        assert anchor == re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"), (title, anchor)


def test_the_checks_times_are_the_benchmarks():
    """README's minutes for the suite and the fast check are bench/RESULTS.md's (section 7, bench/bench_checks.py)."""
    (suite,) = quoted(r"# test: about (\d+) minutes on 2 cores")
    (quick,) = quoted(r"# fast check: every face once, about (\d+) minutes?")
    section = RESULTS[RESULTS.index("## 7. How long the checks take") :]
    measured = {
        name: float(m)
        for name, m in re.findall(r"^\| (fast check|whole suite)\b[^|]*\|[^|]*\| ([\d.]+) minutes", section, flags=re.MULTILINE)
    }
    assert round(measured["whole suite"] / 5) * 5 == int(suite), (suite, measured)  # to the nearest 5 minutes
    assert max(1, round(measured["fast check"])) == int(quick), (quick, measured)


def test_the_set_up_line_needs_only_the_ordinary_package_index():
    """README's set-up line installs from the index pip is set to use and no other (an extra index that cannot be reached
    stalls pip for many minutes); PyTorch's CPU index is the variant README names for the real PyPI, where torch is the
    CUDA build, and the one the Dockerfile and the GitHub workflow use."""
    index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    setup = next(line for line in README.splitlines() if line.rstrip().endswith("# set-up"))
    assert "index-url" not in setup and "python3 -m venv .venv" in setup and ".venv/bin/pip install -r requirements.txt" in setup
    assert f"`.venv/bin/pip install {index} -r requirements.txt`" in " ".join(README.split())
    assert re.search(r"^torch==\d", (model.ROOT / "requirements.txt").read_text(), flags=re.MULTILINE), "torch is no longer pinned"
    assert index in (model.ROOT / "Dockerfile").read_text()
    assert index in (model.ROOT / ".github" / "workflows" / "suite.yml").read_text()


def readme_commands() -> list[str]:
    """Every shell command README shows: each line of a ```bash block (continuations joined, `&&` split) and each
    inline code span that starts like one."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        lines += [re.sub(r"\s+#.*$", "", line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    lines += re.findall(r"`((?:\.venv/bin/|python3? |snakemake |pytest |pip |jupyter)[^`]*)`", README)
    return [part.strip() for line in lines for part in line.split("&&")]


def test_every_readme_command_names_a_program_the_set_up_installs():
    """A new user copies README's commands without activating the venv: each must name the venv's programs (or a
    system one the set-up line installs), and each script it runs must exist."""
    setup = next(line for line in README.splitlines() if line.rstrip().endswith("# set-up"))
    debian = set(re.search(r"apt-get install -y ([\w\s-]+?) &&", setup).group(1).split()) | {"apt-get", "python3", "timeout", "git", "kill"}
    venv_bin = Path(sys.executable).parent  # where the set-up's pip put the requirements' programs (.venv/bin)
    commands = readme_commands()
    assert len(commands) > 30 and any("snakemake" in c for c in commands), commands
    for command in commands:
        words = shlex.split(command)
        while "=" in words[0]:  # VAR=value before the program
            words = words[1:]
        if words[0] == "timeout":  # timeout -s KILL 600 <command>
            words = words[4:]
        program = words[0]
        if program.startswith(".venv/bin/"):
            assert (venv_bin / program.removeprefix(".venv/bin/")).exists(), f"{command}: the set-up installs no {program}"
            scripts = [w for w in words[1:2] if w.endswith((".py", ".ipynb"))]
            assert all((model.ROOT / s).exists() for s in scripts), f"{command}: no such file {scripts}"
        elif "/" in program:  # a script of this repository
            assert os.access(model.ROOT / program, os.X_OK), f"{command}: {program} is not an executable file here"
        else:
            assert program in debian, f"{command}: {program} is neither in .venv/bin nor installed by the set-up line"


@pytest.mark.quick
def test_snakemake_runs_its_rules_with_its_own_python_unactivated(tmp_path):
    """`.venv/bin/snakemake -c2 reports/...` with the venv not activated: the rules' `python` is the venv's."""
    (tmp_path / "in").mkdir()
    pd.DataFrame({"text": ["I was charged twice", "How do I reset my password?"]}).to_csv(tmp_path / "in" / "t.csv", index=False)
    command = [
        str(Path(sys.executable).parent / "snakemake"),
        "-c1",
        f"{tmp_path}/out/t.csv",
        "--config",
        f"inputs={tmp_path}/in",
        f"reports={tmp_path}/out",
    ]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # a shell that never activated the venv
    result = subprocess.run(command, cwd=model.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(pd.read_csv(tmp_path / "out" / "t.csv").category) == ["billing", "account_access"]


def test_ctrl_c_ends_snakemake_serve_cleanly(tmp_path):
    """README's `.venv/bin/snakemake -c2 serve` blocks until Ctrl-C: then the server drains, the rule ends done, no
    traceback, no WorkflowError, nothing left running."""
    log = tmp_path / "log"
    command = [str(Path(sys.executable).parent / "snakemake"), "-c1", "serve", "--config", f"port={free_port()}"]
    env = {**os.environ, "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path}/review.sqlite3", "TRIAGE_VERSIONS_DIR": str(tmp_path / "v")}
    with log.open("w") as out:  # a terminal's Ctrl-C: SIGINT to the whole foreground process group
        server = subprocess.Popen(
            command,
            cwd=model.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 240
            while "ready:" not in log.read_text() and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "ready:" in log.read_text(), log.read_text()[-3000:]
            os.killpg(server.pid, signal.SIGINT)
            assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
    text = log.read_text()
    assert "1 of 1 steps (100%) done" in text and "Traceback" not in text and "WorkflowError" not in text, text[-3000:]


def test_the_gradio_client_example_is_the_one_the_app_shows_and_the_tests_run():
    """README's gradio_client example is, letter for letter, the API tab's (tests/test_ui.py runs that one)."""
    from app import render

    shown = re.search(r"<!-- api-example:gradio_client -->\n```python\n(.*?)```", README, re.S)
    assert shown and shown.group(1) == render.client_example()


def test_the_python_example_runs_as_written_and_prints_what_its_comment_says():
    section = README[README.index("## Using the pipeline from Python") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=model.ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said = re.search(r"# (order_status .*)$", code, flags=re.M).group(1)
    assert done.stdout.splitlines()[0] == said, done.stdout[:500]


def test_the_mcp_python_example_runs_as_written_against_a_server():
    """README's MCP example, its URL pointed at a real server: it lists the two tools and prints the pipeline's label."""
    from app.mcp_tools import tool_names

    section = README[README.index("**For agents: MCP.**") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    server = Server(wait_for_ui=False)
    try:
        pointed = code.replace("http://localhost:7860", server.url)
        done = subprocess.run([sys.executable, "-c", pointed], capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    listed, label = done.stdout.splitlines()
    assert sorted(ast.literal_eval(listed)) == sorted(tool_names())
    ticket = ast.literal_eval(re.search(r"ticket = (\{.*\})", code).group(1))
    assert label == model.run(model.Input(**ticket)).category.value
