"""Selecting checks by their catalog id, as written (``DISC-1``), in a pytest session.

`meshbed run` loads this plugin (``-p meshbed.checkselect``); under plain
pytest, add ``-p meshbed.checkselect`` to get the same:

- ``--meshbed-check DISC-1`` (repeatable; `meshbed run --check DISC-1`)
  keeps exactly the tests marked ``@pytest.mark.check("DISC-1")``;
- ``-k DISC-1`` matches too: each test's check id is one of its keywords
  (``-k`` matches substrings, so ``-k LB-1`` would also match an ``LB-10``;
  ``--check`` is exact).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("meshbed").addoption(
        "--meshbed-check", dest="meshbed_check", action="append", default=[], metavar="ID",
        help="run only the tests of this catalog check id, e.g. DISC-1 (may be given several times)")


def _check_id(item: pytest.Item) -> str | None:
    m = item.get_closest_marker("check")
    return str(m.args[0]) if m and m.args else None


@pytest.hookimpl(tryfirst=True)  # before pytest's own -k/-m deselection reads the keywords
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = {c.upper() for c in config.getoption("meshbed_check", None) or []}
    keep, drop = [], []
    for item in items:
        cid = _check_id(item)
        if cid:
            item.extra_keyword_matches.add(cid)
        (keep if not wanted or (cid and cid.upper() in wanted) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
