"""What the benchmark tells: figures, ratios and targets (PASS/FAIL), the table, the JSON.

A measurement records its samples as *figures* (seconds per unit, the median over the
repetitions), derives *ratios* between figures, checks *targets* and appends the rows the
table prints; ``as_json`` is what ``--json`` writes. Progress goes to stderr as it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from timing import median_and_spread, paired_ratio

HEADER = ("rate", "per op", "spread")
WIDTHS = (44, 22, 10, 6)  # the label column, then one per HEADER title


@dataclass
class Report:
    """Everything measured: figures (samples), ratios, targets, and the printed rows."""

    meta: dict[str, Any]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def record_group(
        self, group: str, samples: dict[str, list[float]], labels: dict[str, tuple[str, str]]
    ) -> None:
        """Record the figures measured together (interleaved): key -> (label, unit)."""
        for key, (label, unit) in labels.items():
            self.figure(key, label, unit, samples[key], group)

    def figure(
        self, key: str, label: str, unit: str, samples: Sequence[float], group: str
    ) -> float:
        """Record seconds per *unit* (one sample per repetition); return the median."""
        median, spread = median_and_spread(samples)
        self.figures[key] = {
            "label": label,
            "unit": unit,
            "group": group,
            "seconds_per_unit": median,
            "per_second": 1 / median if median > 0 else None,
            "samples": list(samples),
            "spread": spread,
        }
        return median

    def ratio(self, key: str, numerator: str, denominator: str, meaning: str) -> float:
        """Record how many times the denominator's time per unit the numerator's is.

        Figures of one interleaved group: the median of the per-repetition ratios (each
        repetition of the subject against the same repetition of its baseline, which ran
        next to it). Figures of different groups: the ratio of their medians.
        """
        top, bottom = self.figures[numerator], self.figures[denominator]
        paired = top["group"] == bottom["group"] and len(top["samples"]) == len(bottom["samples"])
        if paired:
            value = paired_ratio(top["samples"], bottom["samples"])
        else:
            value = float(top["seconds_per_unit"] / bottom["seconds_per_unit"])
        self.ratios[key] = {
            "value": value,
            "numerator": numerator,
            "denominator": denominator,
            "method": "median of paired repetitions" if paired else "ratio of medians",
            "meaning": meaning,
        }
        return value

    def target(
        self,
        key: str,
        description: str,
        value: float,
        limit: float,
        at_most: bool,
        strict: bool = False,
    ) -> None:
        if at_most:
            passed, comparison = (value < limit, "<") if strict else (value <= limit, "<=")
        else:
            passed, comparison = (value > limit, ">") if strict else (value >= limit, ">=")
        self.targets.append(
            {
                "id": key,
                "description": description,
                "value": value,
                "limit": limit,
                "comparison": comparison,
                "pass": passed,
            }
        )

    def section(self, title: str) -> None:
        self.rows.append((title,))

    def row(self, key: str, rate: str, ratio: str = "") -> None:
        """A table row for figure *key*: label, rate, time per unit, spread, ratio."""
        figure = self.figures[key]
        spread = f"±{figure['spread'] * 50:.0f}%" if len(figure["samples"]) > 1 else "once"
        per_unit = format_seconds(figure["seconds_per_unit"])
        self.rows.append((figure["label"], rate, per_unit, spread, ratio))

    def rate(self, key: str) -> str:
        """Figure *key* as a rate: "1,234 pairs/s"."""
        figure = self.figures[key]
        return format_rate(figure["seconds_per_unit"], figure["unit"] + "s")

    def as_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": self.figures,
            "ratios": self.ratios,
            "targets": self.targets,
            "targets_passed": sum(self.targets_by_letter().values()),
            "targets_total": len(self.targets_by_letter()),
            **self.extra,
        }

    def targets_by_letter(self) -> dict[str, bool]:
        """(a) .. (k): a target passes when every one of its measurements does."""
        verdicts: dict[str, bool] = {}
        for target in self.targets:
            letter = target["id"].split("-")[0]
            verdicts[letter] = verdicts.get(letter, True) and target["pass"]
        return verdicts


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_rate(seconds_per_unit: float, unit: str) -> str:
    return f"{1 / seconds_per_unit:,.0f} {unit}/s"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the table -----------------------------------------------------------------------------


def print_table(report: Report) -> None:
    print_heading(report.meta)
    for row in report.rows:
        print_row(row)
    print_targets(report)


def print_heading(meta: dict[str, Any]) -> None:
    placement = (
        f"caller and daemon pinned to CPU {meta['pinned_cpus'][0]} (not the 2+2 runs; "
        "for the 1-64 queue runs the daemon alone on it)"
        if meta["pinned_cpus"]
        else "unpinned"
    )
    print(
        f"mqfs benchmark: {meta['cpus']} CPUs, Linux {meta['kernel']}, Python {meta['python']}, "
        f"commit {meta['commit']}{' (+ local changes)' if meta['dirty'] else ''}"
        f"{' (--quick)' if meta['quick'] else ''}\n"
        f"medians of {meta['repetitions']} interleaved repetitions; {placement}"
    )
    print()
    print(
        "  figure".ljust(WIDTHS[0])
        + "".join(
            f"  {title.rjust(width)}" for title, width in zip(HEADER, WIDTHS[1:], strict=True)
        )
        + "  ratio to baseline"
    )


def print_row(row: tuple[str, ...]) -> None:
    """A section title (1 cell), a note (2 cells) or a figure's row (label .. ratio)."""
    if len(row) == 1:
        print(f"\n{row[0]}")
    elif len(row) == 2:
        print(f"{row[0]}: {row[1]}" if not row[0].startswith("  ") else f"{row[0]}\n    {row[1]}")
    else:
        label, *middle, ratio = row
        cells = [f"  {label}".ljust(WIDTHS[0])]
        cells += [text.rjust(width) for text, width in zip(middle, WIDTHS[1:], strict=True)]
        print("  ".join(cells) + f"  {ratio}")


def print_targets(report: Report) -> None:
    """By letter (a measurement may check a later letter's target first), then as added."""
    print("\ntargets")
    for target in sorted(report.targets, key=lambda target: target["id"].split("-")[0]):
        verdict = "PASS" if target["pass"] else "FAIL"
        value = target["value"]
        shown = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        print(f"  {verdict}  ({target['id']}) {target['description']}: {shown}")
    letters = report.targets_by_letter()
    print(f"\ntargets: {sum(letters.values())}/{len(letters)} pass")
