"""Which code produced a row: a fingerprint of the library, the harness and the user's plugins.

A sweep resumes by skipping cells already saved ``ok``, which is right only when the same code would compute them
again. So every row records ``code``, the short hash of :func:`code_fingerprint`:

* ``fmcore`` and ``fmbench``: a SHA-256 over the path and bytes of every ``.py`` file of the package as imported
  (editable installs and uncommitted edits included — a content hash needs no git);
* ``plugins``: the same over each plugin module's source (a package plugin: all its ``.py`` files);
* for the record, not the hash: a hash of the uncommitted changes to the two packages (``git diff HEAD``), where
  they sit in a git checkout (the commit itself is ``environment.json``'s ``git_commit``).

A run directory whose rows carry another fingerprint is refused on resume (:func:`fmbench.sweep.prepare_output`),
naming what changed; ``--force`` moves it aside and starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import fmcore
from fmbench.plugins import plugin_source

HASHED = ("fmcore", "fmbench", "plugins")


def source_hash(root: Path) -> str:
    """SHA-256 of ``root``'s ``.py`` files: each file's path relative to ``root`` and its bytes, in sorted order. A
    single file is hashed by its name and bytes."""
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(root.parent if root.is_file() else root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _package_root(module) -> Path:
    return Path(module.__file__).resolve().parent


def git_output(arguments: list[str], cwd: Path) -> str | None:
    """What ``git ARGUMENTS`` prints in ``cwd``; None where git is missing or fails (not a checkout)."""
    try:
        return subprocess.run(["git", *arguments], capture_output=True, text=True, check=True, cwd=cwd, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def code_fingerprint(plugins: tuple[str, ...] | list[str] = ()) -> dict:
    """``{"fmcore": hash, "fmbench": hash, "plugins": {name: hash}, "git_diff": hash or None}``."""
    roots = {"fmcore": _package_root(fmcore), "fmbench": Path(__file__).resolve().parent}
    record: dict = {name: source_hash(root) for name, root in roots.items()}
    record["plugins"] = {}
    for name in plugins:
        source = plugin_source(name)
        record["plugins"][name] = source_hash(source) if source is not None else None
    diff = git_output(["diff", "HEAD", "--", str(roots["fmcore"]), str(roots["fmbench"])], roots["fmcore"])
    record["git_diff"] = hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None
    return record


def fingerprint_key(fingerprint: dict) -> str:
    """The short hash every row records: over the hashed parts only (fmcore, fmbench, plugins)."""
    hashed = {name: fingerprint.get(name) for name in HASHED}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


def what_changed(before: dict | None, now: dict) -> str:
    """A sentence naming which parts differ between two fingerprints (``before`` None: not recorded)."""
    if not before:
        return "the earlier run recorded no code fingerprint (an older fmbench, or its environment.json is gone)"
    changes = [f"{name}'s source" for name in ("fmcore", "fmbench") if before.get(name) != now.get(name)]
    old_plugins, new_plugins = before.get("plugins") or {}, now.get("plugins") or {}
    for name in sorted(set(old_plugins) | set(new_plugins)):
        if name not in new_plugins:
            changes.append(f"plugin {name!r} (no longer used)")
        elif name not in old_plugins:
            changes.append(f"plugin {name!r} (new)")
        elif old_plugins[name] != new_plugins[name]:
            changes.append(f"plugin {name!r}'s source")
    if not changes:
        return "the code fingerprint differs"
    return ", ".join(changes) + " changed"
