"""Progress bars (rich) that stay quiet when asked to."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def bar(description: str, total: int | None, enabled: bool = True,
        postfix: Callable[[], str] | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``tick(n)``; shows a rich progress bar on stderr when enabled."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[extra]}")]
    with Progress(*columns, console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=total, extra="")

        def tick(n: int = 1) -> None:
            prog.update(task, advance=n, extra=postfix() if postfix else "")

        yield tick
