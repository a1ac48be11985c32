"""`mattepipe models list | pull NAME… | verify [NAME…]`: the model zoo (`shared.zoo`) on
this machine's MODELS_DIR, downloaded the way a worker does it on first use
(`shared.model_fetch`: checked against the published hash, resumable, atomic, one process
at a time per file)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from mattepipe.cli.flows import ExitCode, err_console, fail
from mattepipe.cli.views import transfer_bar
from shared.model_fetch import ModelDownloadError, ZooSource, fetch_model, verify_file
from shared.zoo import all_models

__all__ = ["list_cmd", "pull_cmd", "verify_cmd"]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n else "–"


def list_cmd(models_dir: Path, source: ZooSource, as_json: bool = False) -> int:
    """Built-ins, MODELS_DIR's files and the zoo, with what each is for and its licence."""
    found = all_models(models_dir, source.zoo)
    if as_json:
        print(json.dumps([m.model_dump() for m in found], indent=2))
        return int(ExitCode.OK)
    table = Table(title=f"models (MODELS_DIR={escape(str(models_dir))})", show_lines=False)
    table.add_column("name", no_wrap=True)
    for col in ("here", "kind", "size", "preset", "licence", "what for"):
        table.add_column(col, overflow="fold")
    for m in found:
        here = "built in" if m.kind == "builtin" else "yes" if m.present else "[dim]pull[/dim]"
        table.add_row(escape(m.name), here, m.kind, _size(m.size), m.preset or "–",
                      escape(m.licence or "–"), escape(m.description or "–"))
    Console(highlight=False).print(table)
    return int(ExitCode.OK)


def pull_cmd(names: list[str], models_dir: Path, source: ZooSource, force: bool = False) -> int:
    """Download each named zoo model (unless it is there: `force` downloads it again)."""
    console = err_console()
    unknown = [n for n in names if source.zoo.get(n) is None]
    if unknown:
        return fail(console, ExitCode.USAGE,
                    f"not in the model catalogue: {', '.join(unknown)}; "
                    f"known: {', '.join(source.zoo.names)}")
    failed = 0
    for name in names:
        model = source.zoo.get(name)
        assert model is not None
        target = models_dir / model.local_name
        if target.is_file() and not force:
            console.print(f"{escape(name)}: already in {escape(str(target))} "
                          "(`mattepipe models verify` checks it; --force downloads it again)")
            continue
        with transfer_bar(console) as bar:
            task = bar.add_task(name, total=None)

            def shown(done: int, total: int | None, bar: Progress = bar,
                      task: TaskID = task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                path = fetch_model(model, models_dir, source.base_url, force=force,
                                   progress=shown)
            except ModelDownloadError as exc:
                bar.stop()
                fail(console, ExitCode.WITH_ERRORS, str(exc))
                failed += 1
                continue
        console.print(f"{escape(name)}: {model.algorithm} checked → [bold]{escape(str(path))}")
    return int(ExitCode.WITH_ERRORS if failed else ExitCode.OK)


def verify_cmd(names: list[str], models_dir: Path, source: ZooSource) -> int:
    """Check zoo model files against their published hashes (default: every one present).
    Exit 3 when one is corrupt or a named one is missing."""
    console = err_console()
    if names:
        unknown = [n for n in names if source.zoo.get(n) is None]
        if unknown:
            return fail(console, ExitCode.USAGE,
                        f"no published hash for: {', '.join(unknown)} (not in the catalogue)")
        models = [m for n in names if (m := source.zoo.get(n)) is not None]
    else:
        models = [m for m in source.zoo.models if (models_dir / m.local_name).is_file()]
        if not models:
            console.print(f"no zoo model in {escape(str(models_dir))} to verify")
            return int(ExitCode.OK)
    bad = 0
    for model in models:
        wrong = verify_file(model, models_dir / model.local_name)
        if wrong is None:
            console.print(f"[green]ok[/green] {escape(model.name)} ({model.algorithm})")
        else:
            bad += 1
            console.print(f"[red]BAD[/red] {escape(model.name)}: {escape(wrong)}; "
                          f"`mattepipe models pull {escape(model.name)} --force` replaces it")
    return int(ExitCode.WITH_ERRORS if bad else ExitCode.OK)
