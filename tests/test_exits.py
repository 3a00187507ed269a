"""The README's exit-status table is the enum's, row for row: a script reading the README gets what the code does."""
from __future__ import annotations

import os
import re

from mxlaunch.exits import Exit

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|")


def readme_table() -> dict:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(2) for line in section.splitlines() for m in [ROW.match(line)] if m}


def test_readme_table_is_the_enum():
    assert readme_table() == {int(e): e.name for e in Exit}


def test_a_signal_maps_to_128_plus_its_number():
    assert Exit.for_signal(2) is Exit.INTERRUPTED and Exit.for_signal(15) is Exit.TERMINATED
