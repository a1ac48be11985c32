"""`mattepipe matte IN_DIR OUT_DIR`: the engines' one-shot folder runner
(`matting_worker.oneshot.matte_folder`) behind a progress bar, with the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from mattepipe.cli.flows import ExitCode, err_console, fail

__all__ = ["matte_cmd"]


def matte_cmd(in_dir: Path, out_dir: Path, model: str, models_dir: Path,
              output: str = "rgba", options: Any = None) -> int:
    """Local, no services: every image under `in_dir` matted into `out_dir` (same tree);
    `options`: a `shared.finishing.OutputOptions` (format, max_size, background, crop).
    0 when every image came through, 3 when some failed (listed), 2 for bad arguments."""
    console = err_console()
    try:
        from matting_worker.oneshot import matte_folder
    except ImportError as exc:  # the engines' one-shot runner is not installed here
        return fail(console, ExitCode.USAGE, f"local matting is not available: {exc}")
    with Progress(TextColumn(f"[bold]matting ({escape(model)})"), BarColumn(),
                  MofNCompleteColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("images", total=None)  # not shown: the TextColumn labels it
        try:
            res = matte_folder(in_dir, out_dir, model, models_dir, output,
                               lambda done, total: bar.update(task, completed=done,
                                                              total=total),
                               **({"options": options} if options is not None else {}))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]")
            return int(ExitCode.INTERRUPTED)
        except (KeyError, ValueError) as exc:
            bar.stop()
            return fail(console, ExitCode.USAGE, str(exc.args[0]) if exc.args else str(exc))
    rate = res.done / res.seconds if res.seconds > 0 else 0.0
    console.print(f"{res.done} matted, {len(res.failed)} failed in {res.seconds:.1f} s "
                  f"({rate:.2f} images/s) → [bold]{escape(str(out_dir.resolve()))}")
    if res.runs_on:
        console.print(f"  model ran on {escape(res.runs_on)}")
    for rel, reason in res.failed[:20]:
        console.print(f"  failed: {escape(rel)}: {escape(reason)}")
    if len(res.failed) > 20:
        console.print(f"  … and {len(res.failed) - 20} more")
    return int(ExitCode.WITH_ERRORS if res.failed else ExitCode.OK)
