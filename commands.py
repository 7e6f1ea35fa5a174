"""The command line, one function per command (`python model.py COMMAND` runs this file's `main`):

python model.py eval                      # accuracy and macro-F1 on data/eval.csv (the default)
python model.py build                     # build artifacts/ from data/ (builder.py) and print the evaluation
python model.py export-onnx DIR [--int8]  # export the embedding model to ONNX (the build runs this)
python model.py cases check|import|fix|reopen ...   # the edge-case store (edge_cases.py)
"""

import argparse
import json
import os
import sys
from pathlib import Path

import builder
import edge_cases
import review
from model import CaseStatus, Category, Urgency


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
    """Into the review queue (today's CSV stores migrate this way); with --accept, straight into the suite."""
    cases = [case for path in args.args for case in edge_cases.cases_in_csv(Path(path))]
    if args.accept:
        saved = edge_cases.save_cases(cases, args.by)
        print(f"{sum(new for _, new in saved)} new cases, {sum(not new for _, new in saved)} already there -> {edge_cases.cases_file()}")
        return 0
    saved = review.flag(cases, created_by=args.by, trusted=True)
    print(f"{sum(new for _, new in saved)} new cases to review, {sum(not new for _, new in saved)} already there -> {review.where()}")
    return 0


def cmd_cases_queue(args) -> int:
    state = None if args.state == "all" else args.state
    page, total = review.cases(state, limit=1000)
    for f in page:
        case = f.case
        print(f"{f.state:9} {case.id}  {case.expected.category:16} x{f.times_flagged}  {case.ticket.text[:70]!r}  {case.note[:40]}")
    print(json.dumps({"shown": len(page), "total": total, **review.counts(), "database": review.where()}))
    return 0


def cmd_cases_accept(args) -> int:
    answer = {k: getattr(args, k) for k in ("category", "needs_human", "team", "urgency") if getattr(args, k) is not None}
    if answer and "category" not in answer:
        sys.exit("--category is needed with --needs-human, --team or --urgency: the answer is set whole")
    accepted = review.accept(args.args, args.by, expected=answer or None)
    print(f"{len(accepted)} of {len(args.args)} cases accepted into {edge_cases.cases_file()} (the others were not pending)")
    return 0


def cmd_cases_reject(args) -> int:
    print(f"{review.reject(args.args, args.by)} of {len(args.args)} cases rejected (the others were not pending)")
    return 0


def cmd_cases_status(args) -> int:
    status = CaseStatus.fixed if args.action == "fix" else CaseStatus.open
    print(f"{edge_cases.set_case_status(args.args, status)} cases marked {status.value}")
    return 0


CASE_ACTIONS = {
    "check": cmd_cases_check,
    "queue": cmd_cases_queue,
    "accept": cmd_cases_accept,
    "reject": cmd_cases_reject,
    "import": cmd_cases_import,
    "fix": cmd_cases_status,
    "reopen": cmd_cases_status,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python model.py", description="Build, evaluate and check the triage pipeline.")
    parser.set_defaults(run=cmd_eval)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("eval", help="accuracy on data/eval.csv (the default command)").set_defaults(run=cmd_eval)
    commands.add_parser("build", help="build the artifacts from data/ and print the evaluation").set_defaults(run=cmd_build)
    cases = commands.add_parser("cases", help="the edge cases: check the suite, review the queue, import a CSV, mark fixed or open")
    cases.add_argument("action", choices=list(CASE_ACTIONS), nargs="?", default="check")
    cases.add_argument("args", nargs="*", help="import: CSV files; accept, reject, fix, reopen: case ids")
    cases.add_argument("--state", choices=[*review.STATES, "all"], default="pending", help="queue: which cases to list")
    cases.add_argument("--by", default=os.environ.get("USER"), help="accept, reject, import: the reviewer's name (default $USER)")
    cases.add_argument("--accept", action="store_true", help="import: straight into the suite, as a reviewer")
    cases.add_argument("--category", choices=[c.value for c in Category], help="accept: the expected category (default: as flagged)")
    cases.add_argument("--needs-human", type=lambda v: {"yes": True, "no": False}[v], metavar="yes|no", help="accept: expected")
    cases.add_argument("--team", help="accept: the expected team")
    cases.add_argument("--urgency", choices=[u.value for u in Urgency], help="accept: the expected urgency")
    cases.set_defaults(run=lambda args: CASE_ACTIONS[args.action](args))
    export = commands.add_parser("export-onnx", help="export the embedding model to ONNX into DIR (the build runs this)")
    export.add_argument("dir", type=Path)
    export.add_argument("--int8", action="store_true", help="static int8 quantization, calibrated on data/train.csv")
    export.set_defaults(run=cmd_export_onnx)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command == "cases" and not any(r.startswith("-") for r in rest):
        args.args += rest  # `cases import --accept FILE`: argparse leaves positionals that come after an option
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except edge_cases.StoreUnavailable as error:  # a full disk, a folder where the store should be: one line, no traceback
        sys.exit(f"{edge_cases.cases_file()}: {error}")
    except review.QueueUnavailable as error:
        sys.exit(f"{review.where()}: {error}")
