"""Safe reading of uploaded archives: every member either lands inside `dest` or gets a reason.

Archives come from strangers and can be 100 GB, so nothing here trusts a header: names are
rebuilt component by component, sizes are counted while bytes are actually copied, tars are
read strictly forward (`r|*`, never seeked) and no member is ever held in memory whole.
"""

from __future__ import annotations

import errno
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Protocol

from gateway.intake.archive_headers import HeaderRefused, guarded_tarinfo, read_zip_directory
from gateway.intake.archive_names import (
    ARCHIVE_SUFFIXES,
    COMPRESSED_MAGIC,
    ZIP_MAGIC,
    BadName,
    clean_name,
    fix_encoding,
    is_image_magic,
    is_v7_tar,
    looks_like_archive,
)
from gateway.intake.ground_truth import GtIndex, gt_key, is_gt_path, match_gt
from gateway.intake.video import (
    VideoInfo,
    VideoLimits,
    VideoRejected,
    decode_frames,
    frame_path,
    is_video_magic,
    is_video_name,
)
from shared.errors import IntakeError
from shared.imaging import probe_image
from shared.limits import NAME_MAX_BYTES, TAR_BLOCK_BYTES, USTAR_MAGIC_SLICE
from shared.settings import Settings
from shared.storage import atomic_write

__all__ = [
    "ArchiveCorrupt",
    "ArchiveLimits",
    "ArchiveRejected",
    "BadName",
    "FileSource",
    "GtIndex",
    "Member",
    "UploadSource",
    "clean_name",
    "detect_kind",
    "gt_key",
    "iter_members",
    "match_gt",
]

CHUNK = 1 << 20
RATIO_FLOOR = 1 << 20
"""Members (and whole archives) that unpack to less than this are never called bombs, however
well they compress."""

_READ_ERRORS = (
    OSError, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile,
    RuntimeError, NotImplementedError, ValueError,
)  # fmt: skip


class ArchiveRejected(IntakeError):
    """The whole upload is refused; `reason` is what the user is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ArchiveCorrupt(ArchiveRejected):
    """The archive breaks off mid-way; every member yielded before this is sound."""


class _MemberError(IntakeError):
    """One member refused; the archive goes on."""


class _SourceError(IntakeError):
    """Reading the archive failed (not writing our copy): corruption, not a full disk."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_total_size: int
    """MAX_UNCOMPRESSED_SIZE: the most an archive may unpack to, whatever its size."""
    max_ratio: float
    """MAX_COMPRESSION_RATIO: per member (zip, over RATIO_FLOOR) and for the whole archive
    (unpacked bytes / archive bytes on disk, zip and tar alike, over RATIO_FLOOR)."""
    max_image_pixels: int
    min_free_disk: int = 0
    """MIN_FREE_DISK: unpacking stops (the archive is refused) before DATA_DIR's file system
    falls below this many free bytes; 0 checks nothing beyond a real ENOSPC."""
    video: VideoLimits = field(default_factory=lambda: VideoLimits.from_settings(Settings()))
    """MAX_VIDEO_SECONDS, MAX_VIDEO_PIXELS, MAX_VIDEO_FRAMES (`gateway.intake.video`)."""
    members_leave: bool = False
    """True on object storage (STORAGE_URL=s3://…): ingest uploads each batch of members and
    removes their local copies (`gateway.intake.landing`), so the local disk never holds a
    whole archive's unpacked bytes: free space is checked per member as it is written, not for
    a zip's declared total up front."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        return cls(
            max_members=settings.max_archive_members,
            max_total_size=settings.max_uncompressed_size,
            max_ratio=settings.max_compression_ratio,
            max_image_pixels=settings.max_image_pixels,
            min_free_disk=settings.min_free_disk,
            video=VideoLimits.from_settings(settings),
            members_leave=settings.storage_url.startswith("s3://"),
        )

    def total_budget(self, archive_bytes: int) -> int:
        """The effective unpacked-size limit of an archive of `archive_bytes`:
        min(MAX_UNCOMPRESSED_SIZE, MAX_COMPRESSION_RATIO × archive bytes), never under
        RATIO_FLOOR."""
        by_ratio = max(RATIO_FLOOR, int(self.max_ratio * max(archive_bytes, 1)))
        return min(self.max_total_size, by_ratio)


class UploadSource(Protocol):
    """Where ingest reads an upload from: a file in DATA_DIR (`FileSource`), or an object
    (`gateway.intake.landing.ObjectSource`: ranged reads, nothing downloaded for an archive)."""

    @property
    def size(self) -> int: ...

    @property
    def local(self) -> Path | None:
        """The upload as a local file, when it is one (hard links, decoding in place)."""

    def open(self) -> IO[bytes]:
        """A binary, seekable reader from the first byte (the caller closes it)."""

    def copy_to(self, target: Path) -> None:
        """The whole upload as the file `target` (a single image or video needs a file)."""


@dataclass(frozen=True)
class FileSource:
    """An upload that is a local file: what every upload is with the local DATA_DIR."""

    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def local(self) -> Path | None:
        return self.path

    def open(self) -> IO[bytes]:
        return self.path.open("rb")

    def copy_to(self, target: Path) -> None:
        """A hard link (no copy of a big file), or a copy across file systems."""
        try:
            os.link(self.path, target)
        except OSError:
            shutil.copyfile(self.path, target)


@dataclass
class Member:
    path: str
    """Posix path inside the archive, cleaned: every output name keeps it."""
    stored: Path | None
    error: str | None
    is_gt: bool
    video: VideoInfo | None = None
    """Set on the one member that stands for a whole decoded video (no task of its own: it
    names the video for the job's manifest); its frames follow it."""
    frame_of: str | None = None
    """On a video's frame: the video's path (ingest refuses the frames of a refused video)."""


def detect_kind(filename: str, head: bytes) -> Literal["zip", "tar", "image", "video"]:
    """Magic bytes decide; the file name is only a hint for magic-less v7 tars."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(COMPRESSED_MAGIC) or head[USTAR_MAGIC_SLICE] == b"ustar":
        return "tar"
    if is_image_magic(head):
        return "image"
    # A video's suffix is enough: a broken one is then a rejected item with FFmpeg's reason.
    if is_video_name(filename) or is_video_magic(head):
        return "video"
    is_empty_tar = len(head) >= TAR_BLOCK_BYTES and not any(head[:TAR_BLOCK_BYTES])
    if filename.lower().endswith(".tar") and (is_empty_tar or is_v7_tar(head)):
        return "tar"
    raise ArchiveRejected("not an archive or image (accepted: .zip, .tar, .tar.gz, an "
                          "image, or a video: .mp4, .mov, .webm, .mkv)")


def _read(src: IO[bytes], n: int) -> bytes:
    try:
        return src.read(n)
    except _READ_ERRORS as exc:
        raise _SourceError(str(exc) or type(exc).__name__) from exc


class _Extractor:
    """What every archive format shares: names, duplicates, counts, budgets, validation."""

    def __init__(self, dest: Path, limits: ArchiveLimits, archive_bytes: int = 0) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest.resolve()
        self.limits = limits
        self.archive_bytes = archive_bytes
        self.budget = limits.total_budget(archive_bytes)
        self.seen: set[str] = set()
        self.entries = 0
        self.total = 0

    def count_entry(self, declared: int = 0) -> None:
        self.entries += 1
        if self.entries > self.limits.max_members:
            raise ArchiveRejected(f"archive has more than {self.limits.max_members} members")
        self.check_total(self.total + declared)
        if declared:
            self.check_disk(declared)

    def check_total(self, total: int) -> None:
        """Both size limits on `total` unpacked bytes: the absolute one and the ratio to the
        archive's own size (members of any size count, so a thousand small bombs add up)."""
        if total <= self.budget:
            return
        if total > self.limits.max_total_size:
            raise ArchiveRejected(self._too_big())
        raise ArchiveRejected(
            f"archive unpacks to more than {self.limits.max_ratio:g} times its own size "
            f"({self.archive_bytes} bytes; MAX_COMPRESSION_RATIO) - zip bomb?")

    def check_disk(self, coming: int) -> None:
        """Refuse before writing `coming` bytes would leave DATA_DIR under MIN_FREE_DISK."""
        floor = self.limits.min_free_disk
        if floor <= 0:
            return
        free = shutil.disk_usage(self.dest).free
        if free - coming < floor:
            raise ArchiveRejected(
                f"not enough free disk space to unpack the archive: {free} bytes free, "
                f"{coming} more needed, {floor} must stay free (MIN_FREE_DISK)")

    def _too_big(self) -> str:
        return f"archive unpacks to more than {self.limits.max_total_size} bytes"

    def admit(self, raw: str) -> tuple[str | None, Member | None]:
        """(clean path, None) to extract; (None, Member) to report; (None, None) to skip."""
        try:
            path = clean_name(raw)
        except BadName as exc:
            shown = fix_encoding(raw).replace("\x00", "\\0")[:NAME_MAX_BYTES]
            return None, Member(shown, None, str(exc), False)
        if path is None:
            return None, None
        is_gt = is_gt_path(path)
        if path in self.seen:
            return None, Member(path, None, "duplicate name", is_gt)
        self.seen.add(path)
        if PurePosixPath(path).suffix.lower() in ARCHIVE_SUFFIXES:
            return None, Member(path, None, "nested archives are not supported", is_gt)
        return path, None

    def reject(self, path: str, reason: str) -> Member:
        return Member(path, None, reason, is_gt_path(path))

    def target(self, path: str) -> Path:
        target = self.dest / path
        if not target.resolve().is_relative_to(self.dest):
            raise _MemberError("path escapes the archive folder")
        return target

    def extract(self, path: str, src: IO[bytes], cap: int | None) -> Member:
        """Copy one member in chunks, counting real bytes; then check it is an image."""
        try:
            target = self.target(path)
            with atomic_write(target) as tmp, tmp.open("wb") as out:
                written = 0
                while chunk := _read(src, CHUNK):
                    if written == 0 and looks_like_archive(chunk):
                        raise _MemberError("nested archives are not supported")
                    written += len(chunk)
                    self.total += len(chunk)
                    self.check_total(self.total)
                    if cap is not None and written > cap:
                        raise _MemberError("compression ratio too high (zip bomb?)")
                    self.check_disk(len(chunk))
                    out.write(chunk)
        except _MemberError as exc:
            return self.reject(path, str(exc))
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            return self.reject(path, "name clashes with a folder or file of the same name")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ArchiveRejected(f"disk full while unpacking the archive: {exc}") from exc
            raise
        return self.validate(path, target)

    def validate(self, path: str, target: Path) -> Member:
        if is_video_name(path) and not is_gt_path(path):
            return Member(path, target, None, False)  # decoded by `expand`
        try:
            probe_image(target, self.limits.max_image_pixels)
        except Exception as exc:  # PIL raises more than it documents; any failure is a reason
            target.unlink(missing_ok=True)
            return self.reject(path, str(exc) or f"cannot read image ({type(exc).__name__})")
        return Member(path, target, None, is_gt_path(path))

    def expand(self, member: Member) -> Iterator[Member]:
        """`member`, or for an extracted video: its frames (`gateway.intake.video`), the copy
        of the video removed once decoded."""
        if member.stored is None or member.is_gt or not is_video_name(member.path):
            yield member
            return
        try:
            yield from self.video(member.stored, member.path)
        finally:
            member.stored.unlink(missing_ok=True)

    def video(self, source: Path, path: str) -> Iterator[Member]:
        """One member naming the video, then one per frame; or one rejected member."""
        counted = 0

        def account(n: int) -> None:
            nonlocal counted
            counted += n
            self.total += n
            if self.total > self.limits.max_total_size:
                raise VideoRejected(self._too_big())
            self.check_disk(n)

        try:
            info, folder = decode_frames(source, path, self.dest, self.limits.video, account)
        except VideoRejected as exc:
            self.total -= counted
            yield self.reject(path, exc.reason)
            return
        yield Member(path, None, None, False, video=info)
        for i in range(info.frames):
            name = frame_path(path, i)
            self.seen.add(name)  # a later member of that name is a duplicate
            yield Member(name, folder / PurePosixPath(name).name, None, False, frame_of=path)


def _iter_zip(src: UploadSource, ex: _Extractor) -> Iterator[Member]:
    with src.open() as f:
        yield from _iter_zip_file(f, ex)


def _iter_zip_file(f: IO[bytes], ex: _Extractor) -> Iterator[Member]:
    try:
        read_zip_directory(f, ex.limits.max_members)
    except HeaderRefused as exc:
        raise ArchiveRejected(exc.reason) from exc
    except OSError as exc:
        raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > ex.limits.max_members:
            raise ArchiveRejected(f"archive has more than {ex.limits.max_members} members")
        if sum(i.file_size for i in infos) > ex.limits.max_total_size:
            raise ArchiveRejected(ex._too_big())
        ratio = ex.limits.max_ratio
        # Members the per-member check refuses are never written: they do not count.
        declared = sum(i.file_size for i in infos if not _member_bomb(i, ratio))
        ex.check_total(declared)
        if not ex.limits.members_leave:
            ex.check_disk(declared)
        for info in infos:
            ex.count_entry()
            if info.is_dir():
                continue
            path, member = ex.admit(info.filename)
            if path is not None:
                member = _zip_member(zf, info, path, ex, ratio)
            if member is not None:
                yield from ex.expand(member)


def _member_bomb(info: zipfile.ZipInfo, ratio: float) -> bool:
    return info.file_size > RATIO_FLOOR and info.file_size > ratio * max(info.compress_size, 1)


def _zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, ex: _Extractor, ratio: float
) -> Member:
    if stat.S_ISLNK(info.external_attr >> 16):
        return ex.reject(path, "links are not supported")
    if info.flag_bits & 0x1:
        return ex.reject(path, "encrypted members are not supported")
    if _member_bomb(info, ratio):
        return ex.reject(path, "compression ratio too high (zip bomb?)")
    cap = max(RATIO_FLOOR, int(ratio * max(info.compress_size, 1)))
    try:
        with zf.open(info) as src:
            return ex.extract(path, src, cap)
    except (_SourceError, *_READ_ERRORS) as exc:
        return ex.reject(path, f"corrupt member: {exc}")


def _end_tracking_info() -> tuple[type[tarfile.TarInfo], list[bool]]:
    """A TarInfo class that notes the all-zero end block.

    tarfile ends quietly on a short or missing header, so a tar cut off between members would
    pass for complete; only a proper end-of-archive block says that nothing is missing.
    The same class refuses oversized extension headers (`guarded_tarinfo`).
    """
    seen: list[bool] = []
    return guarded_tarinfo(seen), seen


def _check_complete(tf: tarfile.TarFile, clean_end: bool) -> None:
    """The end block must be there, and a compressed stream must reach its own end."""
    if not clean_end:
        raise ArchiveCorrupt("corrupt archive: truncated (no end-of-archive block)")
    stream = tf.fileobj
    try:
        while stream is not None and stream.read(CHUNK):
            pass
    except _READ_ERRORS as exc:
        raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc
    decompressor = getattr(stream, "cmp", None)
    if decompressor is not None and not getattr(decompressor, "eof", True):
        raise ArchiveCorrupt("corrupt archive: compressed stream is truncated")


def _iter_tar(src: UploadSource, ex: _Extractor) -> Iterator[Member]:
    info_cls, clean_end = _end_tracking_info()
    with src.open() as f:
        try:
            tf = tarfile.open(  # noqa: SIM115
                fileobj=f,
                mode="r|*",
                encoding="utf-8",
                errors="surrogateescape",
                tarinfo=info_cls,
            )
        except HeaderRefused as exc:
            raise ArchiveRejected(exc.reason) from exc
        except _READ_ERRORS as exc:
            raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc
        with tf:
            while True:
                try:
                    ti = tf.next()
                except HeaderRefused as exc:
                    raise ArchiveRejected(exc.reason) from exc
                except _READ_ERRORS as exc:
                    raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc
                if ti is None:
                    _check_complete(tf, bool(clean_end))
                    return
                # Stream mode would otherwise keep every header in memory (a million members: GBs).
                tf.members.clear()  # type: ignore[attr-defined]
                ex.count_entry(ti.size if ti.isreg() else 0)
                if ti.isdir():
                    continue
                path, member = ex.admit(ti.name)
                if path is not None:
                    member = _tar_member(tf, ti, path, ex)
                if member is not None:
                    yield from ex.expand(member)


def _tar_member(tf: tarfile.TarFile, ti: tarfile.TarInfo, path: str, ex: _Extractor) -> Member:
    if ti.issym() or ti.islnk():
        return ex.reject(path, "links are not supported")
    if not ti.isreg():
        return ex.reject(path, "special files (devices, fifos) are not supported")
    if ti.issparse():
        return ex.reject(path, "sparse files are not supported")
    src = tf.extractfile(ti)
    if src is None:
        return ex.reject(path, "not a regular file")
    try:
        return ex.extract(path, src, None)
    except _SourceError as exc:
        raise ArchiveCorrupt(f"corrupt archive: {exc}") from exc


def _upload_name(filename: str) -> tuple[str, str]:
    """(the upload's base name, that name made safe, or "" where it cannot be): the name a
    single-file upload is stored under, before its kind's fallback."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    try:
        return base, clean_name(base) or ""
    except BadName:
        return base, ""


def _iter_image(src: UploadSource, ex: _Extractor, filename: str) -> Iterator[Member]:
    """A single image: hard-linked into dest (no copy of a big file) or fetched from its
    object, then validated."""
    base, path = _upload_name(filename)
    if not path or "/" in path:
        path = "image" + (PurePosixPath(base).suffix.lower()[:6] or ".jpg")
    target = ex.dest / path
    target.unlink(missing_ok=True)
    if src.local is None:
        ex.check_disk(src.size)
    src.copy_to(target)
    yield ex.validate(path, target)


def _iter_video(src: UploadSource, ex: _Extractor, filename: str) -> Iterator[Member]:
    """A single video: decoded straight from the upload (ingest removes the upload after);
    one stored as an object is fetched to scratch first (FFmpeg seeks through a file)."""
    base, path = _upload_name(filename)
    if not path or "/" in path or not is_video_name(path):
        path = "video" + (PurePosixPath(path or base).suffix.lower()[:6] or ".mp4")
    if src.local is not None:
        yield from ex.video(src.local, path)
        return
    scratch = ex.dest.parent / f"upload-video{PurePosixPath(path).suffix}"
    ex.check_disk(src.size)
    try:
        src.copy_to(scratch)
        yield from ex.video(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def iter_members(
    upload: Path | UploadSource, dest: Path, limits: ArchiveLimits, filename: str
) -> Iterator[Member]:
    """Extract `upload` (a file, or any `UploadSource`) into `dest`, one Member per file entry
    (junk and folders skipped).

    Raises ArchiveRejected for a refusal of the whole archive (limits, not an archive), and
    ArchiveCorrupt when it breaks off — after yielding every member read before that point.
    """
    src: UploadSource = FileSource(upload) if isinstance(upload, Path) else upload
    with src.open() as f:
        head = f.read(TAR_BLOCK_BYTES)
    if not head:
        raise ArchiveRejected("empty file")
    kind = detect_kind(filename, head)
    ex = _Extractor(dest, limits, src.size)
    if kind == "zip":
        yield from _iter_zip(src, ex)
    elif kind == "tar":
        yield from _iter_tar(src, ex)
    elif kind == "video":
        yield from _iter_video(src, ex, filename)
    else:
        yield from _iter_image(src, ex, filename)
