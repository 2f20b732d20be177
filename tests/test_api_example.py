"""The public API as a user meets it: docs/api.md's examples run on a real run folder."""

from __future__ import annotations

import re

from conftest import ROOT

API_DOC = ROOT / "docs" / "api.md"
PLACEHOLDER = "outputs/20261206-101500_full"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_api_doc_examples_run(default_run, tmp_path, monkeypatch):
    text = API_DOC.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 6 and PLACEHOLDER in blocks[0]
    code = "\n".join(blocks).replace(PLACEHOLDER, str(default_run))
    monkeypatch.chdir(tmp_path)  # the forest example writes its PNG here
    namespace: dict = {}
    exec(compile(code, str(API_DOC), "exec"), namespace)
    run, gap_change = namespace["run"], namespace["gap_change"]
    assert set(gap_change.dims) == {"chain", "draw"} and bool(gap_change.notnull().all())
    assert namespace["loo"].elpd == run.loo().elpd
    assert (tmp_path / "forest_gender.png").stat().st_size > 1000


def test_api_doc_is_linked():
    assert "(docs/api.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(api.md)" in (ROOT / "docs" / "run-folder.md").read_text(encoding="utf-8")
