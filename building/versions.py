"""Versions of what the pipeline runs on, kept side by side, and which one is served.

    versions/
      20261128-234501-3fa2c1/     a candidate: every artifact file, its manifest.json (with `version`), gate.json
      20261129-101500-77b0de/     another
      served.json                 {"served": "20261128-234501-3fa2c1", "history": [...]}: switched atomically

`python -m loop candidate` builds one (builder.build_candidate), `gate ID` judges it against the served one
(gate.py), `promote ID` switches the served version and `rollback` returns to the one before, each by one atomic
rename of served.json. A server reads served.json when it starts: it serves that version's folder as it was built,
never rebuilt; with no served.json it serves artifacts/, built from data/ (TRIAGE_ARTIFACTS_DIR overrides both).
This file is a leaf: the build (builder.py) imports it to find the served folder.
"""

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


class VersionError(RuntimeError):
    """A version that does not exist, was not gated, or a rollback with nothing to return to."""


def name_of(folder: Path) -> str | None:
    """The version whose folder this is, or None (artifacts/ or any other folder): a version is served as built."""
    return folder.name if NAME.fullmatch(folder.name) else None


def versions_dir() -> Path:
    return Path(os.environ.get("TRIAGE_VERSIONS_DIR", ROOT / "versions"))


def folder(version: str) -> Path:
    """The folder of `version`; a name that is not a version's (a path, `..`) raises VersionError."""
    if not NAME.fullmatch(version or ""):
        raise VersionError(f"{version!r} is not a version name (like 20261128-234501-3fa2c1): see python -m loop versions")
    return versions_dir() / version


def state() -> dict:
    """served.json: the served version and those served before it (newest last); empty when none was promoted."""
    try:
        saved = json.loads((versions_dir() / "served.json").read_text())
    except FileNotFoundError:
        return {"served": None, "history": []}
    except (OSError, ValueError) as error:
        raise VersionError(f"{versions_dir() / 'served.json'} cannot be read ({error}): mend or delete it") from None
    return {"served": saved.get("served"), "history": list(saved.get("history", []))}


def served_dir() -> Path | None:
    """The folder of the promoted version, or None (serve artifacts/, built from data/)."""
    served = state()["served"]
    return folder(served) if served else None


def listing() -> list[str]:
    """Every version kept, oldest first."""
    found = versions_dir().glob("*/manifest.json") if versions_dir().is_dir() else []
    return sorted(p.parent.name for p in found if NAME.fullmatch(p.parent.name))


def _switch(served: str | None, history: list[str]) -> None:
    """Write served.json under a temporary name, then rename: a reader sees the old pointer or the new one."""
    versions_dir().mkdir(parents=True, exist_ok=True)
    temporary = versions_dir() / f".served.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump({"served": served, "history": history}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, versions_dir() / "served.json")


def promote(version: str, force: bool = False) -> str:
    """Serve `version` from the next start on: it must exist and have passed its gate against what is served now
    (`force` skips that). Returns what was served before (or "artifacts/")."""
    path, now = folder(version), state()
    if not (path / "manifest.json").is_file():
        raise VersionError(f"no version {version} in {versions_dir()}: see python -m loop versions")
    if not force:
        try:
            verdict = json.loads((path / "gate.json").read_text())
        except (OSError, ValueError):
            raise VersionError(f"{version} has not been through the gate: python -m loop gate {version}") from None
        if not verdict.get("passed") or verdict.get("against") != (now["served"] or "artifacts"):
            raise VersionError(f"{version} did not pass its gate against what is served now ({now['served'] or 'artifacts/'})")
    _switch(version, [*now["history"], now["served"] or ""])
    return now["served"] or "artifacts/"


def rollback() -> str:
    """Serve again what was served before the last promotion ("" in the history is artifacts/); returns it."""
    now = state()
    if not now["history"]:
        raise VersionError("nothing to roll back to: no version was promoted")
    *history, previous = now["history"]
    _switch(previous or None, history)
    return previous or "artifacts/"
