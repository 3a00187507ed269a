"""The exit-status table of docs/exit-statuses.md is the enum's, row for row: a script written from the docs
gets what the code does."""
from __future__ import annotations

import os
import re

from mxlaunch.exits import Exit

TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "exit-statuses.md")
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|")


def documented_table() -> dict:
    with open(TABLE, encoding="utf-8") as f:
        return {int(m.group(1)): m.group(2) for line in f for m in [ROW.match(line)] if m}


def test_documented_table_is_the_enum():
    assert documented_table() == {int(e): e.name for e in Exit}


def test_a_signal_maps_to_128_plus_its_number():
    assert Exit.for_signal(2) is Exit.INTERRUPTED and Exit.for_signal(15) is Exit.TERMINATED
