"""One file of results, several benches: each bench owns a section between its markers."""

from __future__ import annotations

import subprocess
from pathlib import Path


def replace_section(path: Path, name: str, section: str) -> None:
    """Write ``section`` between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``,
    keeping every other bench's section; a missing section goes first for ``fit`` (the
    file's title) and last otherwise."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{section.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block.rstrip("\n") + rest.split(end, 1)[1]
    elif name == "fit":
        text = block + ("\n" + text if text else "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    path.write_text(text)


def commit() -> str:
    """The commit the bench ran from (with ``+dirty`` when the tree had changes)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
