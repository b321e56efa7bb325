"""Progress bars (rich) that stay quiet when asked to, and the end-of-run summary table."""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Any, Callable, Iterator


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


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}" if n is not None else "-"


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the end-of-run table, from a run's summary."""
    rows = [("documents extracted", f"{_fmt_int(s.get('docs_extracted'))} of {_fmt_int(s.get('docs_total'))} "
             f"({_fmt_int(s.get('docs_warmup'))} warm-up)"),
            ("QA pairs", _fmt_int(s.get("pairs")))]
    h = s.get("hygiene") or {}
    if "kept" in h:
        rows.append(("pairs passing hygiene", f"{_fmt_int(h['kept'])} (dropped {h.get('exact_duplicate', 0)} exact, "
                     f"{h.get('near_duplicate', 0)} near duplicates, {h.get('contaminated', 0)} contaminated)"))
    rows.append(("bandit rounds", _fmt_int(s.get("rounds"))))
    if s.get("final_ot") is not None:
        rows.append(("final OT distance", f"{s['final_ot']:.4f}"))
    ex = s.get("extractor") or {}
    rows.append(("extractor", str(ex.get("name", "-"))))
    usage = s.get("llm_usage") or {}
    if ex.get("name") == "openai":
        rows.append(("LLM requests (whole run)", _fmt_int(usage.get("calls"))))
        rows.append(("this process", f"{_fmt_int(ex.get('calls'))} requests, {_fmt_int(ex.get('cache_hits'))} "
                     f"cache hits, {_fmt_int(ex.get('retries'))} retries, {_fmt_int(ex.get('docs_failed'))} "
                     "failed documents"))
        rows.append(("LLM tokens (whole run)", f"{_fmt_int(usage.get('prompt_tokens'))} prompt + "
                     f"{_fmt_int(usage.get('completion_tokens'))} completion"))
        if usage.get("cost") is not None:
            rows.append(("LLM cost (whole run)", f"{usage['cost']:.4f}"))
    failed = {k: v for k, v in (s.get("skipped") or {}).items() if k.startswith("extract_failed:")}
    if failed:
        rows.append(("failed extractions", ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in failed.items())))
    secs = s.get("stage_seconds") or {}
    if secs:
        top = sorted(secs.items(), key=lambda kv: -kv[1])[:3]
        rows.append(("time", f"{sum(secs.values()):.1f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in top) + ")"))
    return rows


def summary_table(s: dict[str, Any], file: IO[str] | None = None) -> None:
    """Print the end-of-run summary as a rich table to ``file`` (default stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="equal run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_rows(s):
        table.add_row(label, value)
    Console(file=file or sys.stdout, width=max(100, Console(file=file or sys.stdout).width)).print(table)
