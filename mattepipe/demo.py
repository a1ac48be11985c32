"""`mattepipe demo`: the whole pipeline once, end to end, on the bundled sample photos.

It starts the local stack (or uses one already answering on GATEWAY_PORT), uploads a nested
folder tree of the samples as one zip, follows the job, downloads the result and stops what
it started. The exit status says whether every image came through.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from mattepipe.client.errors import GatewayError
from mattepipe.client.gateway import GatewayClient
from mattepipe.stack import (
    StackError,
    health_urls,
    local_url,
    start_stack,
    stop_stack,
    wait_healthy,
)
from shared.responses import JobStatus
from shared.settings import Settings
from shared.states import JobState

__all__ = ["SAMPLE_FOLDERS", "build_demo_archive", "run_demo", "sample_images", "summarize_zip"]

SAMPLE_FOLDERS = {"astronaut": "people", "chelsea": "animals/cats", "coffee": "objects",
                  "hubble_deep_field": "space", "rocket": "space/launch",
                  "motorcycle_left": "objects/vehicles"}
"""A nested tree, so the demo shows relative paths coming back unchanged."""


def sample_images() -> list[Path]:
    folder = Path(str(files("mattepipe") / "assets" / "samples"))
    return sorted(folder.glob("*.jpg"))


def build_demo_archive(dest: Path, samples: Iterable[Path] | None = None) -> list[str]:
    """Zip the samples under `demo/<folder>/…`; answers the member names."""
    names = []
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress
        for img in samples if samples is not None else sample_images():
            name = f"demo/{SAMPLE_FOLDERS.get(img.stem, 'other')}/{img.name}"
            zf.write(img, name)
            names.append(name)
    if not names:
        raise FileNotFoundError("no sample images found under mattepipe/assets/samples")
    return names


def summarize_zip(path: Path) -> dict[str, Any]:
    """What the result zip holds: counts per part and report.json's summary and items."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        report = json.loads(zf.read("report.json")) if "report.json" in names else {}
    return {
        "mattes": sum(n.startswith("matting_output/") and n.endswith(".png") for n in names),
        "sheets": sum(n.startswith("final_results/") and n.endswith("_compare.jpg")
                      for n in names),
        "has_index": "index.html" in names,
        "summary": report.get("summary", {}),
        "items": report.get("items", []),
    }


def _follow(client: GatewayClient, job_id: str, console: Console, timeout: float) -> JobStatus:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("processing", total=None, state="")

        def show(st: JobStatus) -> None:
            done = st.completed + st.failed + st.rejected
            bar.update(task, total=st.total or None, completed=done, state=st.state or "?")

        return client.wait(job_id, show, poll_s=0.5, timeout=timeout)


def _transfer(console: Console, what: str) -> Progress:
    return Progress(TextColumn(f"[bold]{what}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=console)


def _report(console: Console, final: JobStatus, out: Path, facts: dict[str, Any]) -> None:
    table = Table(title=f"job {final.job_id}: {final.state}")
    for col in ("path", "state", "error"):
        table.add_column(col)
    for item in facts["items"]:
        table.add_row(*(escape(str(item.get(k) or "")) for k in ("path", "state", "error")))
    console.print(table)
    index = ", index.html" if facts["has_index"] else ""
    console.print(f"{final.completed} completed, {final.failed} failed, "
                  f"{final.rejected} rejected of {final.total} · "
                  f"{facts['mattes']} mattes, {facts['sheets']} comparison sheets{index} → "
                  f"[bold]{escape(str(out.resolve()))}")


def run_demo(settings: Settings, out: Path, model: str = "classical,portrait",
             timeout: float = 600.0,
             console: Console | None = None) -> int:
    """0 when every sample completed; 1 when the job ended otherwise; 2 when it could not run."""
    console = console or Console()
    gateway = local_url(settings, settings.gateway_port)
    proc = None
    key = settings.api_key or settings.admin_key  # the demo's own job, under a key it knows
    with GatewayClient(gateway, key.get_secret_value() if key else None) as client:
        try:
            if client.health():
                console.print(f"using the stack already running at {gateway}")
            else:
                proc = start_stack(settings, quiet=True)
                with console.status(f"starting the stack (logs in {settings.data_dir}/logs) …"):
                    wait_healthy(health_urls(settings), timeout, alive=lambda: proc.poll() is None)
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "mattepipe-demo.zip"
                names = build_demo_archive(archive)
                with _transfer(console, f"uploading {len(names)} images") as bar:
                    t = bar.add_task("upload", total=archive.stat().st_size)
                    job = client.upload_file(archive, model=model, progress_cb=lambda d, _t:
                                             bar.update(t, completed=d))
            final = _follow(client, job.job_id, console, timeout)
            with _transfer(console, "downloading") as bar:
                t = bar.add_task("download", total=None)
                client.download(job.job_id, out, progress_cb=lambda d, tot:
                                bar.update(t, completed=d, total=tot))
            facts = summarize_zip(out)
            _report(console, final, out, facts)
            ok = final.state == JobState.COMPLETED and facts["sheets"] == len(names)
            return 0 if ok else 1
        except (StackError, GatewayError, TimeoutError, OSError, zipfile.BadZipFile) as exc:
            console.print(f"[red]demo failed:[/red] {escape(str(exc))}")
            if proc is not None:
                console.print(f"the services' logs are in {settings.data_dir.resolve()}/logs")
            return 2
        finally:
            if proc is not None:
                with console.status("stopping the stack …"):
                    stop_stack(proc)
