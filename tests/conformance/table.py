"""The conformance table for docs/conformance.md, generated from the scenario list.

``python -m tests.conformance.table`` prints it; a test checks that the docs contain
exactly this text, so the table cannot drift from the tests.
"""

from __future__ import annotations

from tests.conformance.scenarios import SCENARIOS

STRESS = (
    "N producer and M consumer processes, random priorities: every message exactly once, "
    "FIFO per producer and priority",
    "as expected",
    "test_stress.py::test_producers_and_consumers[*]",
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    rows = [
        "| behaviour | kernel | mqfs | test id |",
        "|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        mqfs = scenario.mqfs_note or "same"
        test_id = f"`test_scenario[*-{scenario.name}]`"
        rows.append(
            f"| {_cell(scenario.behaviour)} | {scenario.outcome} | {_cell(mqfs)} | {test_id} |"
        )
    behaviour, kernel, test_id = STRESS
    rows.append(f"| {behaviour} | {kernel} | same | `{test_id}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(render())
