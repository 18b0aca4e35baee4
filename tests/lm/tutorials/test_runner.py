"""The tutorial runner's per-cell time limit: a cell that runs too long is stopped and recorded as
a timeout, and the run goes on (fast; the notebooks themselves run in test_tutorials.py)."""

from __future__ import annotations

import time

import pytest

from tests.lm.tutorials.runner import CellTimeout, time_limit


def test_a_cell_past_its_limit_is_stopped_and_the_shell_goes_on():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="NoColor")
    start = time.perf_counter()
    with time_limit(0.3):
        result = shell.run_cell("import time\nwhile True: time.sleep(0.01)", silent=True)
    assert isinstance(result.error_in_exec, CellTimeout)
    assert time.perf_counter() - start < 5
    assert shell.run_cell("x = 1 + 1", silent=True).success and shell.user_ns["x"] == 2


def test_the_limit_is_removed_after_the_cell():
    with time_limit(0.2):
        pass
    time.sleep(0.4)  # no alarm left behind
    with pytest.raises(CellTimeout):
        with time_limit(0.1):
            time.sleep(2)
