"""The DATA_DIR layout of docs/DESIGN.md ("One image's way through"), and the two rules every
service keeps on it.

Rule one: every path that crosses a service boundary is relative to DATA_DIR and is resolved
through `resolve()`, which refuses absolute paths, `..` and anything that would land outside.
Rule two: outputs are written under a temporary name and renamed, so a reader (the zip
download, a retry) never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from shared.errors import InputRejected, ObjectMissing
from shared.limits import JOB_FOLDERS_CACHED, TEMP_NAME_TRIES

if TYPE_CHECKING:
    from shared.objects import ObjectStore
    from shared.settings import Settings

__all__ = [
    "COMPARE_SUFFIX",
    "CUTOUT_SUFFIXES",
    "FINAL_RESULTS",
    "INPUT",
    "LOGS",
    "MATTING_OUTPUT",
    "METRICS_SUFFIX",
    "PNG_SUFFIX",
    "REPORTS",
    "UPLOADS",
    "PathNotAllowed",
    "PathOutsideDataDir",
    "Storage",
    "atomic_write",
    "atomic_write_bytes",
    "check_relative",
    "model_output_rel",
    "realpath",
    "resolve_under",
    "write_all",
]

INPUT = "input"
MATTING_OUTPUT = "matting_output"
FINAL_RESULTS = "final_results"
LOGS = "logs"
UPLOADS = "uploads"
"""Resumable (tus) uploads in progress, one file per upload id."""
PNG_SUFFIX = ".png"
"""Every alpha matte, and the cut-outs of a job with the default `format` (`model_output_rel`)."""
CUTOUT_SUFFIXES = (PNG_SUFFIX, ".webp", ".avif")
"""What a cut-out's name may end with: one per `shared.finishing.OutputFormat`."""
COMPARE_SUFFIX = "_compare.jpg"
"""A comparison sheet: `final_results/<job>/<stem>_compare.jpg`."""
METRICS_SUFFIX = "_metrics.json"
"""A comparison's per-image metrics: `final_results/<job>/<stem>_metrics.json`."""
REPORTS = "reports"
"""A finished job's report.json, report.csv and index.html, written once when it ends: a folder
of its own, so no uploaded name (`index.html/x.jpg`) can collide with them."""


def model_output_rel(first_rel: str, model: str, index: int, alpha: bool = False) -> str:
    """The cut-out name of the `index`-th model of a job, from the first model's `<x>.png`
    (or `<x>.webp` / `<x>.avif`: the job's `format`, `shared.finishing`).

    Model against model (several models in one job): the first model keeps the names of
    docs/DESIGN.md, "Public API" (`<x>.png`, `<x>.alpha.png`) so a single-model job is
    unchanged; every further model puts
    its name before the extension (`<x>.<model>.png`, `<x>.<model>.alpha.png`), so one image's
    cut-outs sit side by side in the tree. The alpha matte is a PNG whatever the format. The
    gateway (request, zip) and the matting worker (where it writes) both derive names here.
    """
    suffix = next((s for s in CUTOUT_SUFFIXES if first_rel.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"a cut-out name ends in {'/'.join(CUTOUT_SUFFIXES)}, "
                         f"not {first_rel!r}")
    base = first_rel[: -len(suffix)]
    tag = f".{model}" if index > 0 else ""
    return f"{base}{tag}.alpha{PNG_SUFFIX}" if alpha else f"{base}{tag}{suffix}"


class PathOutsideDataDir(InputRejected, ValueError):
    """A path that is absolute, climbs with `..`, or resolves outside DATA_DIR."""


class PathNotAllowed(InputRejected, ValueError):
    """A path inside DATA_DIR, but not in the job folder (or with the suffix) a stage may use:
    a worker writes only its own stage's outputs of the job it was given."""


def check_relative(rel: str) -> PurePosixPath:
    """`rel` as a path if it is a safe DATA_DIR-relative name (also the rule for object keys,
    `shared.objects.check_key`); `PathOutsideDataDir` otherwise."""
    if not rel or "\x00" in rel or "\\" in rel:
        raise PathOutsideDataDir(f"invalid path {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or rel.startswith("/"):
        raise PathOutsideDataDir(f"path must be relative to DATA_DIR without '..': {rel!r}")
    return p


_PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_CLOEXEC
_proc_fds = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
"""The kernel can name what a descriptor opened (`/proc/self/fd/<fd>`): `realpath` below."""
_DELETED = " (deleted)"


def _kernel_name(fd: int) -> str | None:
    name = os.readlink(f"/proc/self/fd/{fd}")
    return None if name.endswith(_DELETED) or not name.startswith("/") else name


def realpath(path: str) -> str:
    """`os.path.realpath(path)` for an absolute `path`, the same answer at a fraction of the
    cost: the kernel resolves the path in one `open(O_PATH)` and names the result
    (`/proc/self/fd/<fd>`), where `os.path.realpath` makes one `lstat` per component from the
    root and joins the names in Python (issue 17: 4 per task in the comparison worker, the
    largest item of its file handling after the writes).

    The final name is opened without following it (O_NOFOLLOW): a symlink there, a missing
    parent, a name the kernel cannot resolve (a loop, a file used as a folder) and anything
    else out of the ordinary go to `os.path.realpath` itself, so the answer never differs.
    A missing final name (an output about to be written) is its resolved folder joined with
    the name, as `os.path.realpath` gives."""
    if not _proc_fds or not path.startswith("/"):
        return os.path.realpath(path)
    try:
        fd = os.open(path, _PATH_FLAGS | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _realpath_missing(path)
    except OSError:
        return os.path.realpath(path)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return os.path.realpath(path)
        name = _kernel_name(fd)
    except OSError:
        name = None
    finally:
        os.close(fd)
    return os.path.realpath(path) if name is None else name


def _realpath_missing(path: str) -> str:
    """`realpath` of a path whose last name does not exist (yet): its folder's, plus the name."""
    head, tail = os.path.split(path)
    if not tail or tail in (".", ".."):
        return os.path.realpath(path)
    try:
        fd = os.open(head, _PATH_FLAGS | os.O_DIRECTORY)
    except OSError:  # the folder is missing too, or is no folder: the slow path says
        return os.path.realpath(path)
    try:
        name = _kernel_name(fd)
    except OSError:
        name = None
    finally:
        os.close(fd)
    if name is None:
        return os.path.realpath(path)
    return name.rstrip("/") + "/" + tail


def resolve_under(root: Path, rel: str) -> Path:
    """`rel` below the resolved folder `root`, refusing anything that escapes (`..`,
    absolute names, symlinks that lead out).

    Every call resolves the whole path (symlinks included), on strings: a worker resolves
    a few paths per task, and pathlib's `resolve()` and `parents` walk cost several times
    `os.path.realpath` and one prefix test (issue 17's profile)."""
    check_relative(rel)
    return _resolved(str(root), rel)


def _resolved(base: str, rel: str) -> Path:
    """`resolve_under` for a `rel` that `check_relative` has passed already (`job_file`
    checks it once, through `job_key`, not twice)."""
    full = realpath(os.path.join(base, rel))
    if full != base and not _inside(full, base):
        raise PathOutsideDataDir(f"path escapes DATA_DIR: {rel!r}")
    return Path(full)


def _plain(rel: str) -> bool:
    """`rel` is a path `PurePosixPath` leaves as it is (no empty or `.` part, no leading or
    trailing `/`): `Storage.stem_path` can then cut it as a string."""
    return not (rel in ("", ".") or "//" in rel or "/./" in rel
                or rel.startswith(("/", "./")) or rel.endswith(("/", "/.")))


def _inside(path: str, folder: str) -> bool:
    """`path` lies below `folder` (both absolute, normalised: `realpath`'s output)."""
    return path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


class Storage:
    """Paths under one DATA_DIR; the only way the services turn names into files.

    `objects` is where jobs' files live (`shared.objects`): the DATA_DIR itself by default
    (`LocalStore`), or an S3 bucket (`Storage.from_settings` with `STORAGE_URL=s3://…`). The
    names, the layout and the path rules are the same for both; what stays a local file either
    way is the database, logs and tus uploads in progress.
    """

    def __init__(self, data_dir: Path, objects: ObjectStore | None = None) -> None:
        self.root = data_dir.resolve()
        if objects is None:
            from shared.objects import LocalStore  # shared.objects imports this module

            objects = LocalStore(self.root)
        self.objects: ObjectStore = objects
        probe = objects.local_path(f"{INPUT}/x")
        self.is_local: bool = probe is not None
        """True when jobs' files are files (a LocalStore), not objects elsewhere (S3)."""
        self._files_here = probe == self.root / INPUT / "x"
        """The store is this DATA_DIR itself: the path fast paths (`job_target`) apply."""
        self._folders: dict[tuple[str, str], str] = {}
        """`job_file`'s job folders, resolved once (`_job_folder`)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        """DATA_DIR and the object store that `settings` name (`shared.objects.open_store`)."""
        from shared.objects import open_store

        return cls(settings.data_dir, open_store(settings))

    def ensure_layout(self) -> None:
        for sub in (INPUT, MATTING_OUTPUT, FINAL_RESULTS, LOGS, UPLOADS, REPORTS):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def resolve(self, rel: str) -> Path:
        """DATA_DIR-relative name → absolute path, refusing anything that escapes."""
        return resolve_under(self.root, rel)

    def scrub(self, text: str) -> str:
        """`text` (an error's detail) with DATA_DIR's absolute path taken out: paths inside it
        become DATA_DIR-relative, so no answer tells a caller where the data lives."""
        root = str(self.root)
        return text.replace(root + "/", "").replace(root, "DATA_DIR")

    def job_key(self, rel: str, area: str, job_id: str, suffix: str = "") -> str:
        """`rel` itself, if it names an object below `<area>/<job_id>/` whose name ends with
        `suffix` (any case); `PathNotAllowed` (or `PathOutsideDataDir`) otherwise.

        The rule every worker keeps before it reads or writes (`shared.stages.Stage.output_target`
        and `input_target`), on a key as much as on a file: a stage request cannot reach the task
        database, another job's files or a page the gateway would serve.
        """
        p = check_relative(rel)
        if not job_id or job_id in (".", "..") or "/" in job_id or "\\" in job_id:
            raise PathNotAllowed(f"invalid job id {job_id!r}")
        where = f"{area}/{job_id}/"
        if len(p.parts) < 3 or p.parts[:2] != (area, job_id):
            raise PathNotAllowed(f"{rel!r} is not under {where} (this request's job folder)")
        if suffix and not p.name.lower().endswith(suffix):
            raise PathNotAllowed(f"{rel!r} must be a file under {where} ending {suffix!r}")
        return rel

    def job_file(self, rel: str, area: str, job_id: str, suffix: str = "") -> Path:
        """`job_key`'s rule, resolved to the file in DATA_DIR. The resolved path is checked
        as well, so a symlinked folder cannot lead out of the job's own."""
        self.job_key(rel, area, job_id, suffix)  # check_relative included
        full = _resolved(str(self.root), rel)
        if not _inside(str(full), self._job_folder(area, job_id)):
            raise PathNotAllowed(f"{rel!r} resolves outside {area}/{job_id}/")
        return full

    def _job_folder(self, area: str, job_id: str) -> str:
        """`<area>/<job_id>` resolved, remembered (JOB_FOLDERS_CACHED at most): the file is
        resolved on every call, its job folder once. A stale entry can only refuse more: a
        file that resolves below the remembered folder is inside it, whatever the folder's
        name points at now."""
        key = (area, job_id)
        folder = self._folders.get(key)
        if folder is None:
            if len(self._folders) >= JOB_FOLDERS_CACHED:
                self._folders.clear()
            folder = self._folders[key] = realpath(str(self.root / area / job_id))
        return folder

    def job_object(self, rel: str, area: str, job_id: str, suffix: str = "") -> str:
        """`job_key`'s rule, for the object store: the key itself. On a local store the file
        is checked too (as `job_file` does), so a symlinked folder cannot lead out of the
        job's own."""
        self.job_key(rel, area, job_id, suffix)
        full = self.objects.local_path(rel)
        if full is not None:
            folder = self.objects.local_path(f"{area}/{job_id}")
            if folder is None or folder not in full.parents:
                raise PathNotAllowed(f"{rel!r} resolves outside {area}/{job_id}/")
        return rel

    def job_target(self, rel: str, area: str, job_id: str, suffix: str = "") -> Path | str:
        """Where a stage reads or writes `rel`, checked by `job_key`'s rule: on DATA_DIR the
        resolved file (`job_file`, exactly as before objects: no second resolve when it is
        written), on S3 the key. `read_target` and `write_target` take either."""
        if self._files_here:
            return self.job_file(rel, area, job_id, suffix)
        return self.job_object(rel, area, job_id, suffix)

    def read_target(self, target: Path | str) -> Path | bytes:
        """What the decoders take for a `job_target`: the file, or the object's bytes;
        `ObjectMissing` when there is none."""
        if isinstance(target, Path):
            if not target.is_file():
                raise ObjectMissing(f"no object {self.relative(target)!r}")
            return target
        return self.source(target)

    def write_target(self, target: Path | str, data: bytes) -> None:
        """Write a `job_target` atomically: temporary file and rename, or one PUT."""
        if isinstance(target, Path):
            atomic_write_bytes(target, data)
        else:
            self.objects.put(target, data)

    def target_name(self, target: Path | str) -> str:
        """A `job_target`'s DATA_DIR-relative name (its key). A local target is resolved
        already (`job_file`): no second resolve."""
        if isinstance(target, Path):
            name, root = str(target), str(self.root)
            if _inside(name, root):
                return name[len(root):].lstrip(os.sep)
            return self.relative(target)
        return target

    def source(self, key: str) -> Path | bytes:
        """What the decoders (`shared.imaging`) take for `key`: the file itself on a local
        store, decoded straight from disk as before objects, or the object's bytes on S3.
        `ObjectMissing` (a FileNotFoundError) when there is none."""
        path = self.objects.local_path(key)
        if path is None:
            return self.objects.get(key)
        if not path.is_file():
            raise ObjectMissing(f"no object {key!r}")
        return path

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """A local path to write `key`'s content into, for writers that need a file (a video
        encoder): on success it becomes the object, atomically for readers. On a local store
        it is `atomic_write`'s temporary file beside the target; on S3 a temporary file in
        DATA_DIR, uploaded (`put_file`) and removed."""
        local = self.objects.local_path(key)
        if local is not None:
            with atomic_write(local) as tmp:
                yield tmp
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".object-", suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            self.objects.put_file(key, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    # --- the per-job folders (docs/DESIGN.md, "One image's way through") ----------------------
    def job_input(self, job_id: str) -> Path:
        return self.root / INPUT / job_id

    def job_chunks(self, job_id: str) -> Path:
        return self.job_input(job_id) / "chunks"

    def job_matting(self, job_id: str) -> Path:
        return self.root / MATTING_OUTPUT / job_id

    def job_results(self, job_id: str) -> Path:
        return self.root / FINAL_RESULTS / job_id

    def job_reports(self, job_id: str) -> Path:
        return self.root / REPORTS / job_id

    @staticmethod
    def stem_path(rel_path: str) -> str:
        """`a/b/photo.jpg` → `a/b/photo`: the output name keeps the tree, drops the extension."""
        if not _plain(rel_path):
            p = PurePosixPath(rel_path)
            return str(p.with_suffix("")) if p.suffix else str(p)
        # pathlib's rule on the string (a download derives two names per image from it):
        # the suffix is the last name's from its last dot, if that is neither first nor last.
        dot = rel_path.rfind(".")
        if rel_path.rfind("/") + 1 < dot < len(rel_path) - 1:
            return rel_path[:dot]
        return rel_path

    def matting_rel(self, job_id: str, rel_path: str, suffix: str = ".png") -> str:
        return f"{MATTING_OUTPUT}/{job_id}/{self.stem_path(rel_path)}{suffix}"

    def compare_rel(self, job_id: str, rel_path: str) -> str:
        return f"{FINAL_RESULTS}/{job_id}/{self.stem_path(rel_path)}{COMPARE_SUFFIX}"

    def metrics_rel(self, job_id: str, rel_path: str) -> str:
        return f"{FINAL_RESULTS}/{job_id}/{self.stem_path(rel_path)}{METRICS_SUFFIX}"

    def upload_path(self, upload_id: str) -> Path:
        """The partial file of a resumable upload; its size is the upload's offset."""
        if not upload_id.isalnum():
            raise PathOutsideDataDir(f"invalid upload id {upload_id!r}")
        return self.root / UPLOADS / upload_id

    def remove_job(self, job_id: str) -> None:
        """Every file of the job: its four folders in DATA_DIR (on S3 the gateway's local
        leftovers: partial reports, tus parts) and, on S3, its objects by prefix."""
        for d in (self.job_input(job_id), self.job_matting(job_id), self.job_results(job_id),
                  self.job_reports(job_id)):
            shutil.rmtree(d, ignore_errors=True)
        if not self.is_local:
            check_relative(job_id)
            if "/" in job_id:
                raise PathNotAllowed(f"invalid job id {job_id!r}")
            for area in (INPUT, MATTING_OUTPUT, FINAL_RESULTS, REPORTS):
                self.objects.delete_prefix(f"{area}/{job_id}/")

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free


_TEMP_SEQ = itertools.count()
"""This process's temporary-file counter (`_open_temp`); next() on it is atomic."""
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _open_temp(target: Path) -> tuple[int, str]:
    """A new temporary file beside `target`, open for writing: `.<name>.<pid>-<n>.tmp`.

    Named by this process's id and counter instead of `tempfile.mkstemp`'s random names
    (its name generator and checks were most of a worker's time per tiny image, issue 17).
    `O_EXCL` still guarantees the file is new: a name left by an earlier process of the
    same id is skipped, never reused. The folder is made only when the first try finds
    none (no mkdir per write). Mode 0600, as mkstemp's."""
    folder = str(target.parent)
    last: OSError | None = None
    for _ in range(TEMP_NAME_TRIES):
        tmp = f"{folder}/.{target.name}.{os.getpid()}-{next(_TEMP_SEQ)}.tmp"
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError as exc:  # a leftover of a dead process with our pid
            last = exc
        except FileNotFoundError as exc:  # the folder's first file
            last = exc
            target.parent.mkdir(parents=True, exist_ok=True)
    raise last if last is not None else FileExistsError(folder)


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success."""
    fd, tmp = _open_temp(target)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


_TMPFILE_FLAGS = getattr(os, "O_TMPFILE", 0) | os.O_WRONLY | os.O_CLOEXEC
_tmpfile_works = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
"""False once this process's file system or kernel refused an unnamed file (`_write_new`):
every later write takes the named temporary file."""
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
"""open(O_TMPFILE)'s answers where the file system (EOPNOTSUPP) or kernel (EISDIR, EINVAL: no
O_TMPFILE at all) cannot make an unnamed file."""


_IOV_MAX = 1024
"""Pieces one `os.writev` takes (Linux's IOV_MAX)."""


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Write `chunks` in order at `fd`'s position; a short write resumes where it stopped.
    The bytes written (all of them, or an OSError)."""
    total = 0
    views = [memoryview(c) for c in chunks]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        total += n
        while views and n >= views[0].nbytes:
            n -= views.pop(0).nbytes
        if n:
            views[0] = views[0][n:]
    return total


def _write_new(target: Path, data: bytes) -> bool:
    """`data` as `target` when no file has that name yet, through an unnamed file (O_TMPFILE)
    that is given its name (linkat) only once written: a reader never sees half a file (rule
    two), and the kernel creates one directory entry instead of a temporary one and a rename
    (issue 17: file creation was half of a worker's busy time per tiny image). False, with
    nothing written, when `target` exists (a retry, a replaced result: the caller renames over
    it) or unnamed files are not supported here.

    linkat goes through `/proc/self/fd/<fd>` with AT_SYMLINK_FOLLOW (AT_EMPTY_PATH would need
    CAP_DAC_READ_SEARCH); `dst_dir_fd` is only there to make Python call linkat rather than
    link(2), which does not follow the /proc link — the target is absolute, so the kernel
    ignores it."""
    global _tmpfile_works
    if not _tmpfile_works:
        return False
    folder = target.parent
    try:
        try:
            fd = os.open(folder, _TMPFILE_FLAGS, 0o600)
        except FileNotFoundError:  # the folder's first file
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder, _TMPFILE_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:  # not on this file system or kernel
            _tmpfile_works = False
        return False  # anything else: the named path meets it and says so
    try:
        write_all(fd, [data])
        os.link(f"/proc/self/fd/{fd}", os.path.abspath(target), dst_dir_fd=fd,
                follow_symlinks=True)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):
            _tmpfile_works = False  # linkat would not follow /proc's link here: named files
            return False
        raise  # ENOSPC, a folder removed meanwhile…: as the named path would have
    finally:
        os.close(fd)
    return True


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """`data` as `target`, atomically: a new name through an unnamed file (`_write_new`);
    a name that exists already through a temporary file, written through its descriptor
    (one open, not two) and renamed over `target`."""
    if _write_new(target, data):
        return
    fd, tmp = _open_temp(target)
    try:
        try:
            write_all(fd, [data])
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
