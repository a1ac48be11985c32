"""The `mattepipe` command. Each command is a thin shell over a function of its own module
(stack.py, demo.py, client.py), so the same work is callable from code and tests; new
commands register on `app` the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from .settings import Settings

__all__ = ["app", "main", "settings_with"]

app = typer.Typer(name="mattepipe", no_args_is_help=True, add_completion=False,
                  help="Bulk background removal (alpha matting) for very large image sets.")

MattingWorkers = Annotated[int | None, typer.Option(
    "--matting-workers", min=1, help="matting worker processes (default: MATTING_WORKERS)")]
ComparisonWorkers = Annotated[int | None, typer.Option(
    "--comparison-workers", min=1,
    help="comparison worker processes (default: COMPARISON_WORKERS)")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="where jobs, the database and logs live (default: DATA_DIR)")]


def settings_with(**overrides: Any) -> Settings:
    """Settings from the environment and .env, with the options given on the command line."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def stack(matting_workers: MattingWorkers = None, comparison_workers: ComparisonWorkers = None,
          data_dir: DataDir = None,
          print_config: Annotated[bool, typer.Option(
              "--print-config", help="print the Supervisor config and exit")] = False) -> None:
    """Run every service locally, supervised and restarted on a crash; Ctrl-C stops it."""
    from .stack import StackError, render_config, run_stack

    s = settings_with(matting_workers=matting_workers, comparison_workers=comparison_workers,
                      data_dir=data_dir)
    if print_config:
        try:
            typer.echo(render_config(s), nl=False)
        except StackError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        return
    raise typer.Exit(run_stack(s))


@app.command()
def demo(model: Annotated[str, typer.Option(help="engine for the samples")] = "classical",
         out: Annotated[Path, typer.Option(help="where the result zip goes")] = Path(
             "demo-result.zip"),
         timeout: Annotated[float, typer.Option(
             help="seconds to wait for the stack, and then for the job")] = 600.0,
         matting_workers: MattingWorkers = None, data_dir: DataDir = None) -> None:
    """Process the bundled sample photos as one job on a local stack; download the result."""
    from .demo import run_demo

    s = settings_with(matting_workers=matting_workers, data_dir=data_dir)
    raise typer.Exit(run_demo(s, out, model=model, timeout=timeout))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
