"""The robustness tests: adversarial input to the command line and the API.

Every test here is marked ``slow``. One dataset and model is built for the session;
the ``sweep`` fixture then starts the selected cases, two at a time, so each test
mostly collects an outcome already there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._harness import Case, Sweep, build_dataset

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sweep(request, tmp_path_factory):
    """The session's dataset and model, and the selected cases, started in test order."""
    runner = Sweep(build_dataset(tmp_path_factory.mktemp("robustness")))
    for item in request.session.items:
        case = item.callspec.params.get("case") if hasattr(item, "callspec") else None
        if isinstance(case, Case):
            runner.submit(case)
    yield runner
    runner.close()
