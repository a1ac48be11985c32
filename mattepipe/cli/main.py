"""The `mattepipe` command. Each command is a thin shell over a function of its own module
(stack.py, demo.py, cli_flows.py), so the same work is callable from code and tests; new
commands register on `app` the same way. Exit codes: see `cli_flows`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from shared.formats import OUTPUT_MODES
from shared.settings import Settings

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
    from mattepipe.stack import StackError, render_config, run_stack

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
def demo(model: Annotated[str, typer.Option(help="engines for the samples, model against model")]
         = "classical,portrait",
         out: Annotated[Path, typer.Option(help="where the result zip goes")] = Path(
             "demo-result.zip"),
         timeout: Annotated[float, typer.Option(
             help="seconds to wait for the stack, and then for the job")] = 600.0,
         matting_workers: MattingWorkers = None, data_dir: DataDir = None) -> None:
    """Process the bundled sample photos as one job on a local stack; download the result."""
    from mattepipe.demo import run_demo

    s = settings_with(matting_workers=matting_workers, data_dir=data_dir)
    raise typer.Exit(run_demo(s, out, model=model, timeout=timeout))


Server = Annotated[str, typer.Option(
    "--server", envvar="MATTEPIPE_SERVER", help="the gateway's URL")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="MATTEPIPE_API_KEY", help="sent as Authorization: Bearer",
    show_default=False)]
Model = Annotated[str | None, typer.Option(
    "--model", help="engine name(s), comma-separated (default: the server's)")]
Output = Annotated[str, typer.Option(
    "--output", help="rgba (cut-out), alpha (matte only) or both")]
Format = Annotated[str | None, typer.Option(
    "--format", help="cut-out format: png (default), webp or avif", show_default=False)]
MaxSize = Annotated[int | None, typer.Option(
    "--max-size", min=16, help="longest side of the cut-out in px (scaled down, never up)",
    show_default=False)]
Background = Annotated[str | None, typer.Option(
    "--background", help="colour under the cut-out (#ffffff, #fff) or transparent",
    show_default=False)]
Crop = Annotated[float | None, typer.Option(
    "--crop", min=0.0, help="crop to the object plus this margin in %% of its box (0: tight)",
    show_default=False)]
CallbackUrl = Annotated[str | None, typer.Option(
    "--callback-url", help="webhook the gateway calls when the job ends")]
StateDir = Annotated[Path | None, typer.Option(
    "--state-dir", envvar="MATTEPIPE_STATE_DIR", show_default=False,
    help="where resume states live (default: ~/.cache/mattepipe)")]
ChunkSize = Annotated[int, typer.Option(
    "--chunk-size", min=1, hidden=True, help="bytes per upload request")]
StopAfter = Annotated[int | None, typer.Option(
    "--stop-after-bytes", min=1, hidden=True,
    help="testing: stop the upload once this many bytes went out, as if interrupted")]
JobId = Annotated[str, typer.Argument(help="the job's id")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _finishing(fmt: str | None, max_size: int | None, background: str | None,
               crop: float | None, *, local: bool = False) -> Any:
    """The output options checked here, so a typo is a usage error before any byte is sent
    (the gateway checks them again). Whether AVIF can be written is the server's to say,
    unless the matting runs here (`local`)."""
    from shared.finishing import OutputFormat, OutputOptions

    remote_avif = not local and fmt is not None and fmt.lower() == OutputFormat.AVIF
    try:
        checked = OutputOptions.check(None if remote_avif else fmt, max_size, background, crop)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return checked


def _options(model: str | None, output: str, callback_url: str | None,
             fmt: str | None = None, max_size: int | None = None,
             background: str | None = None, crop: float | None = None) -> Any:
    from mattepipe.client.upload import JobOptions

    if output not in OUTPUT_MODES:
        raise typer.BadParameter(f"use one of {', '.join(OUTPUT_MODES)}", param_hint="--output")
    _finishing(fmt, max_size, background, crop)
    return JobOptions(model=model, output=output, callback_url=callback_url,
                      format=fmt.lower() if fmt else None, max_size=max_size,
                      background=background, crop=crop)


def _conn(server: str, api_key: str | None) -> Any:
    from mattepipe.cli.flows import Conn

    return Conn(server.rstrip("/"), api_key or None)


def _store(state_dir: Path | None) -> Any:
    from mattepipe.client.resume import StateStore

    return StateStore(state_dir)


@app.command()
def run(path: Annotated[Path, typer.Argument(help="a folder, an archive or an image")],
        out: Annotated[Path | None, typer.Option(
            "-o", "--out", help="result zip (default: <name>-matted.zip here)",
            show_default=False)] = None,
        server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None, model: Model = None,
        output: Output = "rgba", callback_url: CallbackUrl = None, state_dir: StateDir = None,
        chunk_size: ChunkSize = 8 * 1024 * 1024, stop_after_bytes: StopAfter = None,
        fmt: Format = None, max_size: MaxSize = None, background: Background = None,
        crop: Crop = None) -> None:
    """Upload, process and download in one go: a folder is zipped on the fly. Interrupted, the
    same command again resumes the upload (or the wait) where it stopped."""
    from mattepipe.cli.flows import run_cmd

    opts = _options(model, output, callback_url, fmt, max_size, background, crop)
    target = out or Path(f"{path.expanduser().absolute().name or 'result'}-matted.zip")
    raise typer.Exit(run_cmd(_conn(server, api_key), path, target, opts, _store(state_dir),
                             chunk_size, stop_after_bytes))


@app.command()
def upload(path: Annotated[Path, typer.Argument(help="a folder, an archive or an image")],
           server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None, model: Model = None,
           output: Output = "rgba", callback_url: CallbackUrl = None,
           state_dir: StateDir = None, chunk_size: ChunkSize = 8 * 1024 * 1024,
           stop_after_bytes: StopAfter = None, fmt: Format = None, max_size: MaxSize = None,
           background: Background = None, crop: Crop = None) -> None:
    """Upload (resumably) and start the job; prints the job id."""
    from mattepipe.cli.flows import upload_cmd

    opts = _options(model, output, callback_url, fmt, max_size, background, crop)
    raise typer.Exit(upload_cmd(_conn(server, api_key), path, opts, _store(state_dir),
                                chunk_size, stop_after_bytes))


@app.command()
def status(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="the raw /status body")] = False
           ) -> None:
    """Show a job's state, counts, throughput and ETA."""
    from mattepipe.cli.flows import status_cmd

    raise typer.Exit(status_cmd(_conn(server, api_key), job_id, as_json))


@app.command()
def wait(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None,
         out: Annotated[Path | None, typer.Option(
             "-o", "--out", help="also download the result zip here", show_default=False)] = None
         ) -> None:
    """Follow a job with a progress bar until it ends; the exit code says how it ended."""
    from mattepipe.cli.flows import wait_cmd

    raise typer.Exit(wait_cmd(_conn(server, api_key), job_id, out))


@app.command()
def download(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None,
             out: Annotated[Path | None, typer.Option(
                 "-o", "--out", help="default: <job id>.zip here", show_default=False)] = None,
             partial: Annotated[bool, typer.Option(
                 "--partial", help="what is done so far, before the job ends")] = False) -> None:
    """Download a job's result zip."""
    from mattepipe.cli.flows import download_cmd

    raise typer.Exit(download_cmd(_conn(server, api_key), job_id, out or Path(f"{job_id}.zip"),
                                  partial))


@app.command()
def jobs(server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None,
         limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
         offset: Annotated[int, typer.Option(min=0)] = 0,
         as_json: Annotated[bool, typer.Option("--json", help="the raw /jobs body")] = False
         ) -> None:
    """List jobs, newest first."""
    from mattepipe.cli.flows import jobs_cmd

    raise typer.Exit(jobs_cmd(_conn(server, api_key), limit, offset, as_json))


@app.command()
def cancel(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKeyOpt = None) -> None:
    """Cancel a job and remove its files on the server."""
    from mattepipe.cli.flows import cancel_cmd

    raise typer.Exit(cancel_cmd(_conn(server, api_key), job_id))


@app.command()
def matte(in_dir: Annotated[Path, typer.Argument(help="folder of images (searched below too)")],
          out_dir: Annotated[Path, typer.Argument(help="where <relative path>.png go")],
          model: Annotated[str | None, typer.Option(
              "--model", help="engine name (default: DEFAULT_MODEL)", show_default=False)] = None,
          output: Output = "rgba",
          models_dir: Annotated[Path | None, typer.Option(
              "--models-dir", help="user models (default: MODELS_DIR)",
              show_default=False)] = None,
          fmt: Format = None, max_size: MaxSize = None, background: Background = None,
          crop: Crop = None) -> None:
    """Matte a folder locally in this process, without the services (like `rembg p`)."""
    from mattepipe.cli.matte import matte_cmd

    if output not in OUTPUT_MODES:
        raise typer.BadParameter(f"use one of {', '.join(OUTPUT_MODES)}", param_hint="--output")
    finishing = _finishing(fmt, max_size, background, crop, local=True)
    s = settings_with(models_dir=models_dir)
    raise typer.Exit(matte_cmd(in_dir, out_dir, model or s.default_model, s.models_dir, output,
                               finishing))


models_app = typer.Typer(name="models", no_args_is_help=True,
                         help="The model zoo in MODELS_DIR: list, pull (download), verify.")
app.add_typer(models_app)
ModelsDir = Annotated[Path | None, typer.Option(
    "--models-dir", help="where models live (default: MODELS_DIR)", show_default=False)]


def _zoo_settings(models_dir: Path | None) -> tuple[Path, Any]:
    from shared.model_fetch import ZooSource

    s = settings_with(models_dir=models_dir)
    return s.models_dir, ZooSource.from_settings(s)


@models_app.command("list")
def models_list(models_dir: ModelsDir = None,
                as_json: Annotated[bool, typer.Option("--json", help="one JSON list")] = False
                ) -> None:
    """Every model a job may name: built-ins, files in MODELS_DIR, and the zoo (`pull`)."""
    from mattepipe.cli.models import list_cmd

    raise typer.Exit(list_cmd(*_zoo_settings(models_dir), as_json))


@models_app.command("pull")
def models_pull(names: Annotated[list[str], typer.Argument(help="zoo model names")],
                models_dir: ModelsDir = None,
                force: Annotated[bool, typer.Option(
                    "--force", help="download again even if the file is there")] = False
                ) -> None:
    """Download zoo models into MODELS_DIR, checked against their published hashes;
    interrupted, the same command resumes."""
    from mattepipe.cli.models import pull_cmd

    raise typer.Exit(pull_cmd(names, *_zoo_settings(models_dir), force))


@models_app.command("verify")
def models_verify(names: Annotated[list[str] | None, typer.Argument(
                      help="zoo model names (default: every one in MODELS_DIR)")] = None,
                  models_dir: ModelsDir = None) -> None:
    """Check zoo model files against their published hashes; exit 3 if one is corrupt."""
    from mattepipe.cli.models import verify_cmd

    raise typer.Exit(verify_cmd(names or [], *_zoo_settings(models_dir)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
