"""Progress of keys rewrap and store copy: plain lines (rate, ETA) when not a terminal,
a rich bar with rate and ETA on one."""

from __future__ import annotations

import io

from vault.cli.progress import Progress, plain_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_not_a_tty_prints_one_plain_line_per_step_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    with Progress("rewrap", stream=out, clock=clock) as bar:
        clock.now += 2.0
        bar.update(2000, 10000, "8000 on older versions", label="rewrap to v3", step="batch 2")
        clock.now += 2.0
        bar.update(4000, 10000, "6000 on older versions", step="batch 4")
        clock.now += 1.0
        bar.update(10000, 10000, "0 on older versions", step="batch 10")
    assert out.getvalue().splitlines() == [
        (
            "batch 2: rewrap to v3 2,000/10,000 rows (20%), 1,000 rows/s, ETA 8 s, "
            "8000 on older versions"
        ),
        (
            "batch 4: rewrap to v3 4,000/10,000 rows (40%), 1,000 rows/s, ETA 6 s, "
            "6000 on older versions"
        ),
        "batch 10: rewrap to v3 10,000/10,000 rows (100%), 2,000 rows/s, 0 on older versions",
    ]


def test_each_table_of_a_copy_has_its_own_rate():
    out, clock = io.StringIO(), Clock()
    with Progress("copy", stream=out, clock=clock) as bar:
        bar.restart("copy tokens")
        clock.now += 10.0
        bar.update(500, 1000)
        bar.restart("copy audit_log")
        clock.now += 1.0
        bar.update(50, 50)
    assert out.getvalue().splitlines() == [
        "copy tokens: 500/1,000 rows (50%), 50 rows/s, ETA 10 s",
        "copy audit_log: 50/50 rows (100%), 50 rows/s",
    ]


def test_eta_and_empty_totals_read_well():
    assert plain_line("copy t", 0, 0, 0.0) == "copy t: 0/0 rows (100%)"
    assert plain_line("r", 1, 7201, 1.0).endswith("ETA 2 h 00 min")
    assert plain_line("r", 10, 1000, 1.0).endswith("ETA 1 min 39 s")


def test_a_terminal_gets_a_bar_with_rate_and_eta():
    out = io.StringIO()
    with Progress("rewrap", stream=out, tty=True) as bar:
        bar.update(500, 1000, label="rewrap to v2")
        bar.update(1000, 1000)
    shown = out.getvalue()
    assert "rewrap to v2" in shown
    assert "1000/1000" in shown
    assert "rows/s" in shown
    assert "\x1b[" in shown  # drawn with terminal control codes, not plain lines
