"""The fast tier's order (conftest.py): the modules that need no shared whole run first, so
the in-process tests keep a core busy while the runs use the other."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import _shared_runs_last


def _item(module: str, name: str, *fixtures: str) -> SimpleNamespace:
    return SimpleNamespace(
        nodeid=f"tests/{module}.py::{name}", fixturenames=["tmp_path", *fixtures]
    )


def test_modules_needing_no_shared_run_come_first_and_stay_whole():
    items = [
        _item("test_a", "one", "strict_failed"),
        _item("test_a", "two"),
        _item("test_b", "one", "default_run"),
        _item("test_c", "one"),
        _item("test_d", "one", "small_run"),
        _item("test_d", "two", "default_run"),
        _item("test_e", "one"),
    ]
    order = [i.nodeid.removeprefix("tests/") for i in _shared_runs_last(items)]
    assert order == [
        "test_c.py::one", "test_e.py::one",  # no shared run: first, in their own order
        "test_b.py::one",  # the default run (the first to end)
        "test_d.py::one", "test_d.py::two",  # the small run, after it: a module stays whole
        "test_a.py::one", "test_a.py::two",  # the strict run, the last to end
    ]  # fmt: skip
