"""How the CLI's tables reach a terminal or a pipe without losing a character.

rich squeezes a table into the console's width by cutting cells (`synth-pr…`, `rmse=0.1…`) and
folding long words. Here every printed table is fitted first: its columns never shrink below
their widest cell (names, numbers, values), and the params column (the one made with
`overflow="fold"`) wraps only between params, never inside `lr=0.01`. A table wider than the
terminal is left wider (the terminal wraps it); nothing is cropped.

When stdout is not a terminal, output is for `grep`, `cut` and logs: tables have no box
drawing, one row per line, and the console is wide enough that nothing wraps.
"""

from __future__ import annotations

from rich.console import Console, ConsoleRenderable, Group, RenderableType, RenderHook
from rich.measure import Measurement
from rich.table import Table

#: The width of a console that is not a terminal: no table row or line is ever wrapped.
PIPE_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """A console whose tables are fitted (see the module's docstring) whenever it prints."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)
    console.push_render_hook(_FitTables(console))
    return console


def fit(renderable: RenderableType, console: Console) -> RenderableType:
    """Fit the tables of `renderable` (a table, or a group of them) for `console`, in place;
    for what is not printed through `console.print` (a `Live` display)."""
    if isinstance(renderable, Group):
        for part in renderable.renderables:
            fit(part, console)
    elif isinstance(renderable, Table):
        _fit_table(renderable, console)
    return renderable


class _FitTables(RenderHook):
    def __init__(self, console: Console) -> None:
        self.console = console

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        for renderable in renderables:
            fit(renderable, self.console)
        return renderables


def _fit_table(table: Table, console: Console) -> None:
    if not console.is_terminal:
        table.box = None
        table.show_edge = False
        table.pad_edge = False
    options = console.options.update_width(PIPE_WIDTH)
    for column in table.columns:
        cells = [column.header, *column.cells]
        sizes = [Measurement.get(console, options, cell) for cell in cells]
        if column.overflow == "fold":  # params: wrap between items only
            column.min_width = max(size.minimum for size in sizes)
        else:  # a name, a number, a value: whole, on one line
            column.no_wrap = True
            column.min_width = max(size.maximum for size in sizes)
