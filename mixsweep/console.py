"""The terminal: the consoles the CLI prints on, and tables that more than one command prints.

Below both `mixsweep.cli` and `mixsweep.demo`, so the library never imports the command line.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# Wider than rich's 80-column default when piped, so tables of keys stay readable in logs.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)


def print_index_summary(summary, out: Console | None = None) -> None:
    """The counts of a COCO index (a `coco.IndexSummary`): classes, images per animal category, and why
    the per-category sum exceeds the animal count."""
    out = out or console
    t = Table(title=f"COCO index (rule: {summary.rule})", show_lines=False)
    t.add_column("class")
    t.add_column("images", justify="right")
    t.add_row("animal", str(summary.n_animal))
    t.add_row("non-animal", str(summary.n_non_animal))
    t.add_row("neither", str(summary.n_neither))
    t.add_row("total", str(summary.n_images))
    out.print(t)
    c = Table(title="images containing each animal category")
    c.add_column("category")
    c.add_column("images", justify="right")
    for name, n in summary.per_category.items():
        c.add_row(name, str(n))
    c.add_row("sum over categories", str(summary.per_category_sum))
    out.print(c)
    out.print(
        f"{summary.n_multi_animal} images hold two or more animal kinds, so the per-category sum "
        f"({summary.per_category_sum}) counts them more than once; the paper's 25,739 is such a sum. "
        f"Images are counted once here."
    )
