"""Versions of what the pipeline runs on, kept side by side, and which one is served.

    versions/                     at the project root (TRIAGE_VERSIONS_DIR moves it)
      20261128-234501-3fa2c1/     a candidate: every artifact file, its manifest.json (with `version`), gate.json
      20261129-101500-77b0de/     another
      served.json                 {"served": "20261129-101500-77b0de", "history": ["", "20261128-234501-3fa2c1"]}
      shadow.json                 {"shadow": "20261128-234501-3fa2c1"}: the candidate a server runs in shadow (app/shadow.py)
      switches.log                every promotion and rollback, one JSON line each, appended and never rewritten

`python -m loop candidate` builds one (builder.build_candidate), `gate ID` judges it against the served one
(gate.py), which records the SHA-256 of every file it judged; `promote ID` serves it (its files still those the gate
judged) and `rollback` returns to the one before. Both hold a lock for their whole read-check-write of served.json and
switch it by one atomic rename. served.json's `history` is the way back: the versions served before, newest last (""
is artifacts/); promote pushes, rollback pops. What was switched, and when, is switches.log's, which only grows.
A server reads served.json when it starts: it serves that version's folder as it was built, never rebuilt; with no
served.json it serves artifacts/, built from data/ (TRIAGE_ARTIFACTS_DIR overrides both).
The build (builder.py) imports this file to find the served folder; it reaches back only to check a version's files.
"""

import contextlib
import errno
import getpass
import json
import os
import re
import stat
import time
from pathlib import Path

import model
from building import files

NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
GATE_FILES = ("gate.json", "gate.html")  # the gate's report, beside what it judged: not part of the version
LOCK_WAIT_S = 60


class VersionError(RuntimeError):
    """A version that does not exist, was not gated, or a rollback with nothing to return to."""


def name_of(folder: Path) -> str | None:
    """The version whose folder this is, or None (artifacts/ or any other folder): a version is served as built."""
    return folder.name if NAME.fullmatch(folder.name) else None


def versions_dir() -> Path:
    """versions/ at the project root, or TRIAGE_VERSIONS_DIR."""
    return Path(os.environ.get("TRIAGE_VERSIONS_DIR") or model.ROOT / "versions")


def served_file() -> Path:
    return versions_dir() / "served.json"


def folder(version: str) -> Path:
    """The folder of `version`; a name that is not a version's (a path, `..`) raises VersionError."""
    if not isinstance(version, str) or not NAME.fullmatch(version):
        raise VersionError(f"{version!r} is not a version name (like 20261128-234501-3fa2c1): see python -m loop versions")
    return versions_dir() / version


def kept(version: str) -> bool:
    """Whether `version` is a version's name with a complete folder (its manifest written last)."""
    return isinstance(version, str) and bool(NAME.fullmatch(version)) and (versions_dir() / version / "manifest.json").is_file()


def state() -> dict:
    """served.json: the served version (None: artifacts/) and the way back (newest last); empty when none was promoted.
    A file of any other shape, or a history naming a version that is not kept, raises VersionError naming the file:
    a rollback must never land on a path or on nothing."""
    path = served_file()
    try:
        saved = json.loads(_read_small(path))
    except FileNotFoundError:
        return {"served": None, "history": []}
    except (OSError, ValueError) as error:
        raise VersionError(f"{path} cannot be read ({error}): mend it, or delete it to serve artifacts/") from None
    problem = _problem(saved)
    if problem:
        raise VersionError(f"{path}: {problem}: mend it, or delete it to serve artifacts/")
    return {"served": saved["served"], "history": list(saved["history"])}


def _read_small(path: Path, most: int = 1 << 20) -> str:
    """A small regular file's text, never following a symbolic link, never blocking on a fifo or reading a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError("a symbolic link, not a file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        text = f.read(most + 1)
    if len(text) > most:
        raise OSError(f"larger than {most} bytes")
    return text.decode("utf-8")


def _problem(saved) -> str | None:
    """What makes `saved` no state (see `state`), or None. The served version's folder may be gone (`present`)."""
    if not isinstance(saved, dict) or set(saved) != {"served", "history"}:
        return 'not {"served": VERSION or null, "history": [VERSION or "", ...]}'
    served, history = saved["served"], saved["history"]
    if served is not None and not (isinstance(served, str) and NAME.fullmatch(served)):
        return f"served {served!r} is not a version name"
    if not isinstance(history, list):
        return "history is not a list"
    for i, name in enumerate(history):
        if name != "" and not kept(name):
            named = isinstance(name, str) and NAME.fullmatch(name)
            return f"history[{i}] {name!r} is {'no version kept' if named else 'not a version name'}"
    return None


def served_dir() -> Path | None:
    """The folder of the promoted version, or None (serve artifacts/, built from data/). Its folder may be gone: `present`
    says so; rollback and promote still work then."""
    served = state()["served"]
    return folder(served) if served else None


def present(path: Path) -> Path:
    """`path`, a version's folder, when it holds its manifest; else VersionError naming it and the way out."""
    if not (path / "manifest.json").is_file():
        raise VersionError(f"version {path.name} is gone ({path} has no manifest.json): python -m loop rollback, or promote another")
    return path


def listing() -> list[str]:
    """Every version kept, oldest first."""
    found = versions_dir().glob("*/manifest.json") if versions_dir().is_dir() else []
    return sorted(p.parent.name for p in found if NAME.fullmatch(p.parent.name))


def sealed(path: Path) -> dict[str, str]:
    """The SHA-256 of every file in a version's folder, its manifest.json included, but the gate's report: what the gate
    records of what it judged, and what promote finds again."""
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() not in GATE_FILES)
    return {p.relative_to(path).as_posix(): files.sha256_file(p) for p in found}


def _differs(path: Path, recorded: dict[str, str]) -> list[str]:
    """The files of the folder `path` that are not as `recorded` (`sealed`'s hashes): changed, added or gone; an
    artifact before the manifest (resealed to match it, the manifest differs too: the artifact is the news)."""
    now = sealed(path)
    changed = set(now) ^ set(recorded) | {name for name in now.keys() & recorded.keys() if now[name] != recorded[name]}
    return sorted(changed, key=lambda name: (name == "manifest.json", name))


def intact(version: str) -> Path:
    """The folder of `version`, kept, with every file its manifest records as recorded; else VersionError naming it."""
    path = folder(version)
    if not (path / "manifest.json").is_file():
        raise VersionError(f"no version {version} in {versions_dir()}: see python -m loop versions")
    problem = _built_problem(path)
    if problem:
        raise VersionError(f"{version} is not as it was built: {problem}")
    return path


def _built_problem(path: Path) -> str | None:
    """What makes the folder `path` no version as it was built, or None: a symbolic link (the folder or a file in it:
    what it points to may change), a manifest naming another version (a folder copied under a new name), a file that
    is not what the manifest records."""
    from building import builder  # builder imports this file

    links = [p for p in [path, *path.rglob("*")] if p.is_symlink()]
    if links:
        return f"{links[0]} is a symbolic link: a version holds its own files"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("version") != path.name:
            return f"{path / 'manifest.json'} is version {manifest.get('version')!r}'s, not {path.name}'s (a copied folder)"
        return builder.artifact_problem(manifest, path)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as error:
        return f"{path / 'manifest.json'} cannot be read ({error})"


def unchanged(path: Path) -> None:
    """What a server checks before it serves the version in `path`: as it was built (`intact`) and, when it went through
    the gate, still the files the gate judged (a file changed and its manifest resealed after the promotion is refused
    too). VersionError naming the file and the way out."""
    problem = _built_problem(path) if (path / "manifest.json").is_file() else f"{path} has no manifest.json"
    if problem is None and (path / "gate.json").is_file():
        try:
            recorded = json.loads((path / "gate.json").read_text()).get("sha256")
        except (OSError, ValueError, AttributeError) as error:
            recorded, problem = None, f"{path / 'gate.json'} cannot be read ({error})"
        if problem is None:
            changed = _differs(path, recorded) if isinstance(recorded, dict) else []
            if changed:  # (a gate.json from before the gate recorded hashes has none: checked against the manifest only)
                problem = f"{path / changed[0]} is not what the gate judged"
    if problem:
        raise VersionError(f"version {path.name} cannot be served ({problem}): python -m loop rollback, or promote another")


def judged(version: str, served: str | None) -> None:
    """VersionError unless `version`'s gate.json is the gate's record of these very files, and it passed against `served`."""
    path = folder(version)
    gate = path / "gate.json"
    try:
        verdict = json.loads(gate.read_text())
    except FileNotFoundError:
        raise VersionError(f"{version} has not been through the gate: python -m loop gate {version}") from None
    except (OSError, ValueError) as error:
        raise VersionError(f"{gate} cannot be read ({error}): python -m loop gate {version}") from None
    recorded = verdict.get("sha256") if isinstance(verdict, dict) else None
    if not isinstance(recorded, dict) or verdict.get("candidate") != version or "manifest.json" not in recorded:
        raise VersionError(f"{gate} records no SHA-256 of the files the gate judged (not the gate's record): python -m loop gate {version}")
    changed = _differs(path, recorded)
    if changed:
        more = f" and {len(changed) - 1} more are" if len(changed) > 1 else " is"
        raise VersionError(f"{path / changed[0]}{more} not what the gate judged ({gate}): python -m loop gate {version}")
    if not verdict.get("passed") or verdict.get("against") != (served or "artifacts"):
        raise VersionError(f"{version} did not pass its gate against what is served now ({served or 'artifacts/'})")


def promote(version: str, force: bool = False) -> dict:
    """Serve `version` from the next start on: its files must be those its manifest records and, unless `force`, those
    its gate judged, passing against what is served now. Returns the state it produced."""
    with _switching():
        now = state()
        intact(version)
        if not force:
            judged(version, now["served"])
        return _switch(version, [*now["history"], now["served"] or ""], "promote")


def rollback() -> dict:
    """Serve again what was served before the last promotion ("" in the history is artifacts/); returns the state it
    produced."""
    with _switching():
        now = state()
        if not now["history"]:
            raise VersionError("nothing to roll back to: no version was promoted")
        *history, previous = now["history"]
        return _switch(previous or None, history, "rollback")


@contextlib.contextmanager
def _switching():
    """The lock every promote and rollback holds from reading served.json to its rename: one at a time, none lost."""
    from filelock import Timeout

    try:
        lock = files.file_lock(served_file())
        lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout:
        raise VersionError(f"{lock.lock_file} was held for {LOCK_WAIT_S} s by another promote or rollback: try again") from None
    except OSError as error:  # a folder where the lock or versions/ should be, a full disk
        raise VersionError(f"{served_file()} cannot be locked ({error})") from None
    try:
        yield
    finally:
        lock.release()


def _switch(served: str | None, history: list[str], command: str) -> dict:
    """Write served.json by one atomic rename (a reader sees the old pointer or the new one), and log the switch: the log
    is opened first (never through a link to elsewhere), so a switch it cannot record is not made."""
    now = {"served": served, "history": history}
    log_file, flags = versions_dir() / "switches.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    try:
        log = os.open(log_file, flags, 0o644)
    except OSError as error:
        raise VersionError(f"{log_file} cannot record a switch ({error.strerror}): nothing switched") from None
    try:
        files.write_atomic(served_file(), json.dumps(now, indent=1) + "\n")
        line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command, "by": _who()} | now
        os.write(log, (json.dumps(line) + "\n").encode())
    except OSError as error:
        raise VersionError(f"{served_file()} or {log_file}: {error.strerror} (python -m loop versions says what is served)") from None
    finally:
        os.close(log)
    return now


def shadow_file() -> Path:
    return versions_dir() / "shadow.json"


def shadowed() -> str | None:
    """The version a server starting now runs in shadow (shadow.json), or None. A file of another shape, or naming a
    version not kept, raises VersionError naming the file."""
    path = shadow_file()
    try:
        saved = json.loads(_read_small(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise VersionError(f"{path} cannot be read ({error}): mend it, or python -m loop shadow --stop") from None
    name = saved.get("shadow") if isinstance(saved, dict) and set(saved) == {"shadow"} else None
    if not kept(name):
        raise VersionError(f'{path}: not {{"shadow": VERSION}} naming a version kept: python -m loop shadow --stop')
    return name


def shadow(version: str | None) -> dict:
    """Run `version` in shadow from each server's next start (None: stop); it must be kept as built and not be the served
    one. Recorded in switches.log like a promotion; returns {"shadow": version}."""
    with _switching():
        if version is not None:
            intact(version)
            if version == state()["served"]:
                raise VersionError(f"{version} is the served version: shadow a candidate (python -m loop versions lists them)")
        now = {"shadow": version}
        log_file, flags = versions_dir() / "switches.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            log = os.open(log_file, flags, 0o644)
        except OSError as error:
            raise VersionError(f"{log_file} cannot record a switch ({error.strerror}): nothing switched") from None
        try:
            if version is None:
                shadow_file().unlink(missing_ok=True)
            else:
                files.write_atomic(shadow_file(), json.dumps(now) + "\n")
            line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": "shadow", "by": _who()} | now
            os.write(log, (json.dumps(line) + "\n").encode())
        except OSError as error:
            raise VersionError(f"{shadow_file()} or {log_file}: {error.strerror}") from None
        finally:
            os.close(log)
        return now


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
