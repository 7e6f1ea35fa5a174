"""The command line, one function per command (`python model.py COMMAND` runs this file's `main`):

python model.py eval                      # accuracy and macro-F1 on data/eval.csv (the default)
python model.py build                     # build artifacts/ from data/ (builder.py) and print the evaluation
python model.py export-onnx DIR [--int8]  # export the embedding model to ONNX (the build runs this)
python model.py cases check|import|fix|reopen ...   # the edge-case store (edge_cases.py)
"""

import argparse
import json
import sys
from pathlib import Path

import builder
import edge_cases
from model import CaseStatus


def cmd_eval(args) -> int:
    print(json.dumps(builder.evaluate(), indent=2))
    return 0


def cmd_build(args) -> int:
    print(json.dumps(builder.build_artifacts()["eval"], indent=2))
    return 0


def cmd_export_onnx(args) -> int:
    builder.export_onnx(args.dir, args.int8)
    return 0


def cmd_cases_check(args) -> int:
    store = edge_cases.read_cases()
    for s in store.skipped:
        print(f"{edge_cases.cases_file()}, line {s['line']}: skipped ({s['problem']})", file=sys.stderr)
    results = edge_cases.check_cases(store.cases)
    for r in results:
        if r["verdict"] in ("broken", "newly fixed"):
            case, now = r["case"], r["answer_now"]["category"]
            print(f"{r['verdict']:12} {r['id']}  expected {case.expected.category}, now {now}: {case.ticket.text[:80]}")
    counts = edge_cases.verdict_counts(results)
    print(json.dumps({"cases": len(results), **counts, "skipped": len(store.skipped), "store": str(edge_cases.cases_file())}))
    return 1 if counts["broken"] else 0


def cmd_cases_import(args) -> int:
    saved = [pair for path in args.args for pair in edge_cases.import_cases(Path(path))]
    print(f"{sum(new for _, new in saved)} new cases, {sum(not new for _, new in saved)} already there -> {edge_cases.cases_file()}")
    return 0


def cmd_cases_status(args) -> int:
    status = CaseStatus.fixed if args.action == "fix" else CaseStatus.open
    print(f"{edge_cases.set_case_status(args.args, status)} cases marked {status.value}")
    return 0


CASE_ACTIONS = {"check": cmd_cases_check, "import": cmd_cases_import, "fix": cmd_cases_status, "reopen": cmd_cases_status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python model.py", description="Build, evaluate and check the triage pipeline.")
    parser.set_defaults(run=cmd_eval)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("eval", help="accuracy on data/eval.csv (the default command)").set_defaults(run=cmd_eval)
    commands.add_parser("build", help="build the artifacts from data/ and print the evaluation").set_defaults(run=cmd_build)
    cases = commands.add_parser("cases", help="the edge cases: check them, import a CSV of them, mark them fixed or open")
    cases.add_argument("action", choices=list(CASE_ACTIONS), nargs="?", default="check")
    cases.add_argument("args", nargs="*", help="import: CSV files; fix, reopen: case ids")
    cases.set_defaults(run=lambda args: CASE_ACTIONS[args.action](args))
    export = commands.add_parser("export-onnx", help="export the embedding model to ONNX into DIR (the build runs this)")
    export.add_argument("dir", type=Path)
    export.add_argument("--int8", action="store_true", help="static int8 quantization, calibrated on data/train.csv")
    export.set_defaults(run=cmd_export_onnx)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except edge_cases.StoreUnavailable as error:  # a full disk, a folder where the store should be: one line, no traceback
        sys.exit(f"{edge_cases.cases_file()}: {error}")
