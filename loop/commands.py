"""The loop's command line, one function per command (`python -m loop COMMAND` runs this file's `main`; the build's own
commands are `python -m building build|eval`).

Edge cases: `cases check` (the regression suite, edge_cases.py),
`cases queue|accept|reject` (the review queue, review.py; `cases accept ID --expect FIELD=VALUE ...` sets the expected
answer), `cases import FILE.csv [--accept]`, `cases fix|reopen|train ID ...`. Versions: `candidate`,
`gate ID [--batch FILE.csv]` (gate.py), `promote ID`, `rollback`, `versions` (versions.py), `shadow ID|--stop|report ID|judge ID SIDE`
(app/shadow.py).
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from building import builder, contract, versions
from building.files import interpreter, pasteable
from loop import edge_cases, review
from loop.edge_cases import CaseStatus
from model import Expected


def counted(n: int, noun: str = "case") -> str:
    """`1 case`, `2 cases`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def expected_and_now(result: dict[str, Any]) -> str:
    """`expected billing, now feedback`: what a case expects and the pipeline's answer now, field by field."""
    wanted = result["case"].expected.model_dump(mode="json", exclude_none=True)
    return f"expected {edge_cases.in_words(wanted)}, now {edge_cases.in_words({k: result['answer_now'].get(k) for k in wanted})}"


def cmd_cases_check(args) -> int:
    store = edge_cases.read_cases()
    for s in store.skipped:
        print(f"{edge_cases.cases_file()}, line {s['line']}: skipped ({s['problem']})", file=sys.stderr)
    results = edge_cases.check_cases(store.cases)
    for r in results:
        if args.all or r["verdict"] in ("broken", "newly fixed"):
            print(f"{r['verdict']:12} {r['id']}  {expected_and_now(r)}: {edge_cases.input_text(r['case'].ticket)[:80]}")
    counts = edge_cases.verdict_counts(results)
    print(json.dumps({"cases": len(results), **counts, "skipped": len(store.skipped), "store": str(edge_cases.cases_file())}))
    return 1 if counts["broken"] else 0


def cmd_cases_import(args) -> int:
    """Into the review queue (today's CSV stores migrate this way); with --accept, straight into the suite. A file that
    cannot be read or a row that is no edge case stops it before anything is saved, named in one line."""
    try:
        cases = [case for path in args.args for case in edge_cases.cases_in_csv(Path(path))]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        sys.exit(f"nothing imported: {error}")
    if args.accept:
        saved = edge_cases.save_cases(cases, args.by)
        new = sum(new for _, new in saved)
        print(f"{counted(new, 'new case')}, {len(saved) - new} already there -> {edge_cases.cases_file()}")
        return 0
    saved = review.flag(cases, created_by=args.by, trusted=True)
    new = sum(new for _, new in saved)
    print(f"{counted(new, 'new case')} to review, {len(saved) - new} already there -> {review.where()}")
    return 0


def cmd_cases_queue(args) -> int:
    state = None if args.state == "all" else args.state
    page, total = review.cases(state, limit=1000)
    label = contract.label()
    for f in page:
        case = f.case
        given = case.expected.model_dump(exclude_none=True, mode="json")  # the label, and each other field where given
        first = str(given.pop(label, "")) if label else ""
        shown = f"{f.state:9} {case.id}  {first:16} {edge_cases.in_words(given):28} x{f.times_flagged}"
        shown += f"  -> {f.suite_id}" if f.suite_id else ""  # accepted: its id in the suite
        print(f"{shown}  {edge_cases.input_text(case.ticket)[:70]!r}  {case.note[:40]}")
    print(json.dumps({"shown": len(page), "total": total, **review.counts(), "database": review.where()}))
    return 0


def expected_given(pairs: list[str]) -> Expected | None:
    """`--expect FIELD=VALUE ...` as an expected answer (model.Expected), set whole; None when none is given. A field
    that is not the answer's, a value that is not its type, or a required field left out stops it, naming the field."""
    if not pairs:
        return None
    fields, cells = list(Expected.model_fields), {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or name.strip() not in fields:
            sys.exit(f"--expect {pair!r}: give FIELD=VALUE, FIELD one of {', '.join(fields)}")
        cells[name.strip()] = value.strip()
    try:
        return Expected.model_validate(edge_cases.expected_from(cells))
    except ValidationError as error:
        sys.exit(f"--expect: {contract.error_message(error)} (the expected answer is set whole: give each field it needs)")
    except ValueError as error:  # a list or model field's value that is not JSON
        sys.exit(f"--expect: {error}")


def cmd_cases_accept(args) -> int:
    answer = expected_given(args.expect)
    with not_pending(args.args):
        accepted = review.accept(args.args, args.by, expected=answer, train=args.train)
    print(f"{counted(len(accepted))} accepted into {edge_cases.cases_file()}")
    for queued, case in zip(dict.fromkeys(args.args), accepted, strict=True):
        if case.id != queued:  # the reviewer's answer makes another case
            print(f"{queued} is {case.id} in the suite")
    return 0


def cmd_cases_reject(args) -> int:
    with not_pending(args.args):
        rejected = review.reject(args.args, args.by)
    print(f"{counted(rejected)} rejected")
    return 0


def existing(ids: list[str], found: set[str], what: str, listing: str) -> None:
    """Stop before anything is changed when no id is given, or naming the ids that are no `what` (a typo, or a case
    decided already); `listing` is the command that lists them."""
    if not ids:
        sys.exit(pasteable(f"give the ids of the {what}s ({listing} lists them)"))
    missing = [i for i in ids if i not in found]
    if missing:
        sys.exit(pasteable(f"nothing changed: no {what} {', '.join(missing)} ({listing} lists them)"))


@contextlib.contextmanager
def not_pending(ids: list[str]):
    """Stop when no id is given, or naming each case that is not pending (another reviewer was first, say) when the
    decision in the block is refused: nothing was changed."""
    existing(ids, set(ids), "pending case", "python -m loop cases queue --state all")
    try:
        yield
    except review.NotPending as error:
        sys.exit(str(error))


def in_suite(ids: list[str]) -> None:
    existing(ids, {c.id for c in edge_cases.load_cases()}, "case", "python -m loop cases check --all")


def cmd_cases_status(args) -> int:
    """fix: only cases the pipeline gets right now (a case that still fails is named and nothing changes); reopen."""
    status = CaseStatus.fixed if args.action == "fix" else CaseStatus.open
    in_suite(args.args)
    if status == CaseStatus.fixed:
        chosen = [c for c in edge_cases.load_cases() if c.id in args.args]
        failing = [r for r in edge_cases.check_cases(chosen) if r["verdict"] in ("open", "broken")]  # wrong now
        if failing:
            for r in failing:
                print(f"still failing {r['id']}: {expected_and_now(r)}", file=sys.stderr)
            sys.exit(f"nothing marked: {len(failing)} of the cases still fail (they stay open)")
    print(f"{counted(edge_cases.set_case_status(args.args, status))} marked {status.value}")
    return 0


def cmd_cases_train(args) -> int:
    """Mark suite cases as training examples: candidates learn from them (`python -m loop candidate`)."""
    in_suite(args.args)
    print(f"{counted(edge_cases.mark_cases(args.args, train=True))} marked as training examples")
    return 0


def cmd_candidate(args) -> int:
    built = builder.build_candidate([c for c in edge_cases.load_cases() if c.train])
    shown = ("version", "based_on", "training_cases", *contract.labelled_sets())  # and each labelled set's metrics, by its name
    print(json.dumps({k: built.get(k) for k in shown}, indent=2))
    print(f"next: {interpreter()} -m loop gate {built['version']}", file=sys.stderr)
    return 0


def cmd_gate(args) -> int:
    from loop import gate

    if args.batch and not contract.label():
        sys.exit("--batch: this pipeline has no label (model.LABEL) to judge a batch on; the gate judges the suite's cases")
    verdict = gate.run(args.version, args.batch)
    for name, s in verdict["sets"].items():
        for problem in s.get("left_out", []):  # a row no input can be made of: named, and the rest judged
            print(f"{name}, row {problem['row']}: left out ({problem['problem']})", file=sys.stderr)
        print(gate.described(name, s, verdict["settings"]["significance"]))
    print(f"cases: {len(verdict['cases']['would_break'])} would break, {len(verdict['cases']['fixes'])} fixed, "
          f"{len(verdict['cases']['training_learned'])} training cases learned")  # fmt: skip
    for failure in verdict["failures"]:
        print(f"FAILS {failure}", file=sys.stderr)  # a significant regression, with its interval
    folder = versions.folder(args.version)
    print(f"{'passes' if verdict['passed'] else 'fails'} the gate against {verdict['against']}: {folder / 'gate.html'}")
    return 0 if verdict["passed"] else 1


def cmd_promote(args) -> int:
    produced = versions.promote(args.version, force=args.force)
    was = produced["history"][-1] or "artifacts/"
    print(f"{args.version} is served from the next start of each server (was {was}); undo: {interpreter()} -m loop rollback")
    print(json.dumps(produced))  # the state this promotion produced (served.json)
    return 0


def cmd_rollback(args) -> int:
    produced = versions.rollback()
    print(f"{produced['served'] or 'artifacts/'} is served again from the next start of each server")
    print(json.dumps(produced))  # the state this rollback produced (served.json)
    return 0


def cmd_versions(args) -> int:
    now, first = versions.state(), next(iter(contract.labelled_sets()), None)  # the evaluation set
    for name in versions.listing():
        try:
            saved = json.loads((versions.folder(name) / "manifest.json").read_text())
            accuracy = (saved.get(first) or {}).get("accuracy") if first else None
            about = f"  accuracy {accuracy:.4f}" if accuracy is not None else ""
            about += f"  {len(saved.get('training_cases', []))} training cases"
        except (OSError, ValueError, AttributeError, TypeError):
            about = "  manifest.json unreadable"
        mark = "*" if name == now["served"] else " "
        print(f"{mark} {name}{about}  {gate_said(versions.folder(name) / 'gate.json')}")
    problem = ""
    if now["served"]:  # what a server would refuse at its start: the folder gone, or changed since it was built or gated
        try:
            versions.unchanged(versions.folder(now["served"]))
        except versions.VersionError as error:
            problem = f" -- {error}"
    print(f"served: {now['served'] or 'artifacts/ (built from data/)'}{problem}")
    print(f"way back (rollback): {' <- '.join(reversed([h or 'artifacts/' for h in now['history']])) or 'none'}")
    try:
        print(f"in shadow: {versions.shadowed() or 'none'}")
    except versions.VersionError as error:
        print(f"in shadow: none -- {error}")
    return 0


def cmd_shadow(args) -> int:
    """shadow VERSION: run it in shadow from each server's next start; shadow --stop; shadow report VERSION: its record;
    shadow judge ID SIDE: a reviewer's verdict on a disagreement (a case in the queue, the gate's live evidence)."""
    if args.what == "judge":
        if not (args.version or "").isdigit() or args.side not in review.SIDES:
            sys.exit(pasteable(f"python -m loop shadow judge ID {'|'.join(review.SIDES)} [--expect FIELD=VALUE]: ID from shadow report"))
        try:
            case = review.judge_shadow(int(args.version), args.side, args.by, expected=expected_given(args.expect))
        except review.NotPending as error:
            sys.exit(str(error))
        except (ValueError, ValidationError) as error:
            sys.exit(f"shadowed request {args.version}: {error}")
        print(f"case {case.id} waits in the review queue, expecting {edge_cases.in_words(case.expected.model_dump(mode='json'))}")
        print(f"next: {interpreter()} -m loop cases accept {case.id}")
        return 0
    if args.stop or args.what == "report":
        if args.stop:
            versions.shadow(None)
            print("no version in shadow from the next start of each server")
            return 0
        if not args.version:
            sys.exit(pasteable("name the version: python -m loop shadow report VERSION"))
        print(json.dumps(review.shadow_record(args.version), indent=1))
        return 0
    if not args.what:
        print(json.dumps({"shadow": versions.shadowed()}))
        return 0
    produced = versions.shadow(args.what)
    print(
        f"{args.what} answers a sample of the requests too, from the next start of each server; undo: {interpreter()} -m loop shadow --stop"
    )
    print(json.dumps(produced))
    return 0


def gate_said(gated: Path) -> str:
    """What a version's gate.json says, without hashing its files (promote does)."""
    try:
        verdict = json.loads(gated.read_text())
    except FileNotFoundError:
        return "not gated"
    except (OSError, ValueError):
        return "gate.json unreadable"
    if not isinstance(verdict, dict) or not isinstance(verdict.get("sha256"), dict):
        return "gate.json not the gate's record (no SHA-256 of the files)"
    return "gate passed" if verdict.get("passed") else "gate failed"


CASE_ACTIONS = {
    "check": cmd_cases_check,
    "queue": cmd_cases_queue,
    "accept": cmd_cases_accept,
    "reject": cmd_cases_reject,
    "import": cmd_cases_import,
    "fix": cmd_cases_status,
    "reopen": cmd_cases_status,
    "train": cmd_cases_train,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loop", description="The loop: edge cases, review, candidates, the gate, versions.")
    commands = parser.add_subparsers(dest="command", required=True)
    cases = commands.add_parser("cases", help="the edge cases: check the suite, review the queue, import a CSV, mark fixed or open")
    cases.add_argument("action", choices=list(CASE_ACTIONS), nargs="?", default="check")
    cases.add_argument("args", nargs="*", help="import: CSV files; accept, reject, fix, reopen, train: case ids")
    cases.add_argument("--state", choices=[*review.STATES, "all"], default="pending", help="queue: which cases to list")
    cases.add_argument("--by", default=os.environ.get("USER"), help="accept, reject, import: the reviewer's name (default $USER)")
    cases.add_argument("--accept", action="store_true", help="import: straight into the suite, as a reviewer")
    cases.add_argument("--all", action="store_true", help="check: list every case with its id and verdict, not only the broken")
    cases.add_argument("--train", action="store_true", help="accept: as training examples (candidates learn from them)")
    cases.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"accept: the expected answer, one field each, set whole (fields: {', '.join(Expected.model_fields)}); default: as flagged",
    )
    cases.set_defaults(run=lambda args: CASE_ACTIONS[args.action](args))
    commands.add_parser("candidate", help="build a candidate version from data/ and the training cases").set_defaults(run=cmd_candidate)
    gating = commands.add_parser("gate", help="judge a candidate against the served version (exit 1 when it fails)")
    gating.add_argument("version")
    gating.add_argument("--batch", action="append", default=[], metavar="FILE.csv", help="a labelled CSV to compare on too")
    gating.set_defaults(run=cmd_gate)
    promoting = commands.add_parser("promote", help="serve a version that passed its gate (from each server's next start)")
    promoting.add_argument("version")
    promoting.add_argument("--force", action="store_true", help="without a passing gate (its files still checked against its manifest)")
    promoting.set_defaults(run=cmd_promote)
    commands.add_parser("rollback", help="serve again what was served before the last promotion").set_defaults(run=cmd_rollback)
    commands.add_parser("versions", help="the versions kept, which is served, their gates").set_defaults(run=cmd_versions)
    shadowing = commands.add_parser("shadow", help="run a candidate in shadow on a sample of the servers' requests (app/shadow.py)")
    shadowing.add_argument("what", nargs="?", help="a version to put in shadow, or `report` (then the version), or `judge`")
    shadowing.add_argument("version", nargs="?", help="report: the version whose live record to show; judge: a disagreement's id")
    shadowing.add_argument("side", nargs="?", help=f"judge: which side is right, one of {', '.join(review.SIDES)}")
    shadowing.add_argument("--by", default=os.environ.get("USER"), help="judge: the reviewer's name (default $USER)")
    shadowing.add_argument("--expect", action="append", default=[], metavar="FIELD=VALUE", help="judge: the right answer, set whole")
    shadowing.add_argument("--stop", action="store_true", help="no version in shadow from the next start")
    shadowing.set_defaults(run=cmd_shadow)
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
    except versions.VersionError as error:
        sys.exit(pasteable(str(error)))
