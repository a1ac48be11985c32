"""Where jobs' files live: one small object-store interface, two backends.

`LocalStore` is today's DATA_DIR: a key is a DATA_DIR-relative name and the object is the file
of that name, written under a temporary name and renamed (`shared.storage.atomic_write`), so
every fast path on files (sendfile, decoding straight from disk) keeps working through
`local_path`. `S3Store` (`STORAGE_URL=s3://bucket/prefix`, `S3_ENDPOINT_URL`, credentials from
the standard `AWS_*` variables) keeps the same keys as objects below the prefix, so inputs,
cut-outs, sheets and reports need no shared volume: a worker on another machine reads and
writes them over HTTP.

Keys are checked by the same rule as DATA_DIR paths (`shared.storage`'s: no absolute name, no
`..`, no empty part, no backslash or NUL), whatever the backend: a key that would escape on
disk is refused on S3 too, so moving a deployment between the two changes nothing a caller
can reach. Which keys one request may touch (its own job, its own suffix) is
`shared.storage.Storage.job_key`'s rule, on top of this one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from builtins import list as builtins_list
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from shared.errors import ConfigError, ObjectMissing
from shared.limits import (
    MULTIPART_MAX_PARTS,
    OBJECT_PUT_FILE_CONCURRENCY,
    OBJECT_PUT_FILE_PART_BYTES,
    OBJECT_READ_AHEAD_BYTES,
)
from shared.storage import PathOutsideDataDir, atomic_write, check_relative, resolve_under

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

    from shared.settings import Settings

__all__ = [
    "MULTIPART_FOLDER",
    "LocalStore",
    "ObjectMissing",
    "ObjectStore",
    "Parts",
    "S3Store",
    "check_key",
    "check_part_number",
    "check_prefix",
    "open_store",
]

MULTIPART_FOLDER = ".multipart"
"""LocalStore's parts of multipart uploads in progress: `<root>/.multipart/<upload id>/`. A
hidden top-level folder, outside every job's area, so no listing of a job's prefix sees it."""
_COPY_CHUNK = 1024 * 1024
_DELETE_BATCH = 1000
"""Keys per delete request: S3's DeleteObjects takes at most 1000."""

Parts = list[tuple[int, str]]
"""A multipart upload's `(part_number, etag)` pairs, as `complete_multipart` takes them
(a module-level name: inside the stores `list` is the listing method)."""


def check_key(key: str) -> str:
    """`key` if it is a valid object name (the DATA_DIR path rule); `PathOutsideDataDir`
    (an InputRejected, so a worker answers 400) otherwise. Stricter than a path by one rule:
    every `/`-separated part is a real name (no `a//b`, `./a`, trailing `/`), because on S3
    those are distinct keys that a file system would fold into one."""
    check_relative(key)
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise PathOutsideDataDir(f"invalid key {key!r}: empty, '.' or '..' parts")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything) or a key-like string, optionally ending in `/`."""
    if prefix:
        check_key(prefix.rstrip("/") or "/")
    return prefix


def check_part_number(part_number: int) -> int:
    """S3's part numbers are 1…10 000; both backends refuse anything else (ValueError)."""
    if not 1 <= part_number <= MULTIPART_MAX_PARTS:
        raise ValueError(f"part number {part_number} is outside 1..{MULTIPART_MAX_PARTS}")
    return part_number


class ObjectStore(ABC):
    """Bytes under keys. Every method checks its key first (`check_key`); an absent object is
    `ObjectMissing` (a FileNotFoundError) from `get`, `open_read`, and `size` answers None.

    Writes are atomic for readers: a reader sees the old object, or none, or the whole new
    one, never a part. Methods are blocking; async code calls them through
    `asyncio.to_thread` (the gateway) or in a worker's thread pool (the stages).
    """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A seekable binary reader (for zipfile / tarfile); the caller closes it."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) the object, atomically for readers."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file as the object (S3: in parts above a threshold)."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is none."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """`dst` becomes a copy of `src` (atomically for readers; `ObjectMissing` when `src`
        is absent). Local: a hard link where the file system allows, else a copy; S3: a
        server-side copy, no bytes through the caller."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every `(key, size)` whose key starts with `prefix` (a plain string prefix, as on
        S3: `input/j1/` lists a folder, `input/j1` also `input/j10/`), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; an absent one is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; how many there were. An empty prefix is
        refused (ValueError): nothing deletes a whole store by accident."""

    def local_path(self, key: str) -> Path | None:
        """The file behind `key` when the store is a local folder (it may not exist yet: a
        writer may write it there through `shared.storage.atomic_write`); None on S3."""
        check_key(key)
        return None

    @abstractmethod
    def start_multipart(self, key: str) -> str:
        """Begin a multipart upload to `key`; its upload id."""

    @abstractmethod
    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        """Store part `part_number` (1…10 000; a part sent again replaces it); its etag."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: Parts) -> None:
        """Join the named `(part_number, etag)` parts, in order, into the object."""

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an upload in progress and its parts; an unknown id is not an error."""

    def describe(self) -> str:
        """Where the objects live, for logs and `/health` (no credentials)."""
        return type(self).__name__


def _no_empty_prefix(prefix: str) -> str:
    if not prefix.strip("/"):
        raise ValueError("delete_prefix needs a non-empty prefix")
    return check_prefix(prefix)


class LocalStore(ObjectStore):
    """Objects as files under one folder (DATA_DIR): today's layout, byte for byte."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def describe(self) -> str:
        return f"local folder {self.root}"

    def path(self, key: str) -> Path:
        """`key`'s file, refusing keys that escape the folder (symlinks included)."""
        return resolve_under(self.root, check_key(key))

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(f"no object {key!r}") from exc

    def open_read(self, key: str) -> BinaryIO:
        p = self.path(key)
        if not p.is_file():
            raise ObjectMissing(f"no object {key!r}")
        try:
            return p.open("rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key!r}") from exc

    def put(self, key: str, data: bytes) -> None:
        with atomic_write(self.path(key)) as tmp:
            tmp.write_bytes(data)

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        if path.resolve() == target:
            return
        with atomic_write(target) as tmp:
            shutil.copyfile(path, tmp)

    def copy(self, src: str, dst: str) -> None:
        source, target = self.path(src), self.path(dst)
        if not source.is_file():
            raise ObjectMissing(f"no object {src!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            try:
                os.link(source, tmp)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if os.path.isfile(self.path(key)) else None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        check_prefix(prefix)
        # The deepest folder the prefix names whole; the rest filters names below it.
        folder_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            top = resolve_under(self.root, folder_rel) if folder_rel else self.root
        except PathOutsideDataDir:
            return iter(())
        found: builtins_list[tuple[str, int]] = []
        for dirpath, dirnames, filenames in os.walk(top):
            if Path(dirpath) == self.root and MULTIPART_FOLDER in dirnames:
                dirnames.remove(MULTIPART_FOLDER)
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an atomic_write in progress: not an object yet
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    found.append((key, os.stat(os.path.join(dirpath, name)).st_size))
                except FileNotFoundError:
                    continue  # deleted while we walked
        found.sort()
        return iter(found)

    def delete(self, key: str) -> None:
        p = self.path(key)
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        _no_empty_prefix(prefix)
        keys = [k for k, _ in self.list(prefix)]
        for k in keys:
            self.delete(k)
        if prefix.endswith("/"):
            folder = self.path(prefix.rstrip("/"))
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        return len(keys)

    # --- multipart: parts as files, joined on complete ------------------------------------
    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise PathOutsideDataDir(f"invalid upload id {upload_id!r}")
        return self.root / MULTIPART_FOLDER / upload_id

    def _owned(self, key: str, upload_id: str) -> Path:
        folder = self._upload_dir(upload_id)
        try:
            owner = (folder / "key").read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no multipart upload {upload_id!r}") from exc
        if owner != key:
            raise ObjectMissing(f"multipart upload {upload_id!r} is not for {key!r}")
        return folder

    def start_multipart(self, key: str) -> str:
        self.path(key)
        upload_id = uuid.uuid4().hex
        folder = self._upload_dir(upload_id)
        folder.mkdir(parents=True)
        (folder / "key").write_text(key, encoding="utf-8")
        return upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        check_key(key)
        check_part_number(part_number)
        folder = self._owned(key, upload_id)
        with atomic_write(folder / f"{part_number:05d}") as tmp:
            tmp.write_bytes(data)
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def complete_multipart(self, key: str, upload_id: str, parts: Parts) -> None:
        target = self.path(key)
        folder = self._owned(key, upload_id)
        if not parts:
            raise ValueError("a multipart upload needs at least one part")
        numbers = [check_part_number(n) for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise ValueError("parts must be in ascending order, each once")
        files: builtins_list[Path] = []
        for n, etag in parts:
            f = folder / f"{n:05d}"
            if not f.is_file():
                raise ValueError(f"part {n} was never uploaded")
            digest = hashlib.md5(usedforsecurity=False)
            with f.open("rb") as src:
                while chunk := src.read(_COPY_CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != etag.strip('"'):
                raise ValueError(f"part {n}: etag {etag!r} does not match the part stored")
            files.append(f)
        with atomic_write(target) as tmp, tmp.open("wb") as out:
            for f in files:
                with f.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
        shutil.rmtree(folder, ignore_errors=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        check_key(key)
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)


class _RangedReader(io.RawIOBase):
    """A seekable raw reader over one S3 object: each `readinto` is a ranged GET, and
    `io.BufferedReader` on top turns zipfile's small reads into GETs of
    `OBJECT_READ_AHEAD_BYTES` (`S3Store.open_read`)."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek before the start of {self._key!r}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self._size)
        if end <= self._pos:
            return 0
        data = self._store._range(self._key, self._pos, end)
        n = len(data)
        view[:n] = data
        self._pos += n
        return n


class S3Store(ObjectStore):
    """Objects in an S3-compatible bucket below a prefix (`s3://bucket/prefix`).

    Data goes through obstore (Rust `object_store`, connection pooling, retries; about twice
    boto3's rate on the small objects the workers read and write: BENCHMARKS.md, "Object
    storage"). Multipart uploads that outlive one call (a tus upload's parts arrive in separate
    requests, maybe to separate gateways) need S3's upload ids, which obstore does not expose:
    those four calls go through boto3, created on first use, so a worker never loads it.
    Credentials and region: the standard `AWS_*` variables, read by both libraries.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        from obstore.store import S3Store as _Obstore

        if not bucket or "/" in bucket:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url or None
        options: ClientConfig = {}
        if self.endpoint_url and self.endpoint_url.startswith("http://"):
            options["allow_http"] = True
        config: S3Config = {}
        if self.endpoint_url:
            config["endpoint"] = self.endpoint_url
            # Path-style URLs (endpoint/bucket/key): what MinIO and SeaweedFS answer.
            config["virtual_hosted_style_request"] = False
        self._store = _Obstore(bucket, prefix=self.prefix or None, config=config,
                               client_options=options)
        self._boto: Any = None
        self._boto_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None) -> S3Store:
        """`s3://bucket/prefix` → a store (the prefix may be empty)."""
        if not url.startswith("s3://"):
            raise ConfigError(f"an S3 storage URL starts with s3://, not {url!r}")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        return cls(bucket, prefix, endpoint_url)

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def full_key(self, key: str) -> str:
        """The key inside the bucket (the prefix joined on)."""
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- data: obstore ----------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self._store, check_key(key)).bytes())
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key!r}") from exc

    def _range(self, key: str, start: int, end: int) -> bytes:
        import obstore

        try:
            return bytes(obstore.get_range(self._store, key, start=start, end=end))
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key!r}") from exc

    def open_read(self, key: str) -> BinaryIO:
        size = self.size(key)
        if size is None:
            raise ObjectMissing(f"no object {key!r}")
        raw = _RangedReader(self, key, size)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=OBJECT_READ_AHEAD_BYTES))

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self._store, check_key(key), data, use_multipart=False)

    def put_file(self, key: str, path: Path) -> None:
        import obstore

        check_key(key)
        size = path.stat().st_size
        if size <= OBJECT_PUT_FILE_PART_BYTES:
            obstore.put(self._store, key, path.read_bytes(), use_multipart=False)
            return
        # Parts big enough for S3's 10 000, read from the file a few at a time: memory is
        # OBJECT_PUT_FILE_CONCURRENCY parts, whatever the file's size.
        part = max(OBJECT_PUT_FILE_PART_BYTES, -(-size // MULTIPART_MAX_PARTS))
        obstore.put(self._store, key, path, use_multipart=True, chunk_size=part,
                    max_concurrency=OBJECT_PUT_FILE_CONCURRENCY)

    def size(self, key: str) -> int | None:
        import obstore

        try:
            return int(obstore.head(self._store, check_key(key))["size"])
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        import obstore

        check_prefix(prefix)
        # obstore lists whole path segments: list the folder the prefix is in, filter the rest.
        # Sorted here: AWS lists in key order, SeaweedFS walks its folders instead.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else None
        found = [(meta["path"], int(meta["size"]))
                 for batch in obstore.list(self._store, folder) for meta in batch
                 if meta["path"].startswith(prefix)]
        found.sort()
        return iter(found)

    def copy(self, src: str, dst: str) -> None:
        import obstore

        try:
            obstore.copy(self._store, check_key(src), check_key(dst))
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {src!r}") from exc

    def delete(self, key: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self._store, check_key(key))

    def delete_prefix(self, prefix: str) -> int:
        import obstore

        _no_empty_prefix(prefix)
        count = 0
        batch: builtins_list[str] = []
        for key, _ in self.list(prefix):
            batch.append(key)
            if len(batch) == _DELETE_BATCH:
                obstore.delete(self._store, batch)
                count += len(batch)
                batch = []
        if batch:
            obstore.delete(self._store, batch)
            count += len(batch)
        return count

    def presign_get(self, key: str, expires_s: float) -> str:
        """A URL that GETs the object without credentials until `expires_s` from now."""
        import obstore

        return str(obstore.sign(self._store, "GET", check_key(key),
                                datetime.timedelta(seconds=expires_s)))

    # --- multipart: boto3, for the upload ids -----------------------------------------------
    def _client(self) -> Any:
        with self._boto_lock:
            if self._boto is None:
                import boto3
                from botocore.config import Config

                self._boto = boto3.client(
                    "s3", endpoint_url=self.endpoint_url,
                    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}))
            return self._boto

    def start_multipart(self, key: str) -> str:
        answer = self._client().create_multipart_upload(
            Bucket=self.bucket, Key=self.full_key(check_key(key)))
        return str(answer["UploadId"])

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        check_part_number(part_number)
        answer = self._client().upload_part(
            Bucket=self.bucket, Key=self.full_key(check_key(key)), UploadId=upload_id,
            PartNumber=part_number, Body=data)
        return str(answer["ETag"]).strip('"')

    def complete_multipart(self, key: str, upload_id: str, parts: Parts) -> None:
        from botocore.exceptions import ClientError

        if not parts:
            raise ValueError("a multipart upload needs at least one part")
        numbers = [check_part_number(n) for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise ValueError("parts must be in ascending order, each once")
        try:
            self._client().complete_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(check_key(key)), UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{e.strip(chr(34))}"'}
                                           for n, e in parts]})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchUpload",):
                raise ObjectMissing(f"no multipart upload {upload_id!r}") from exc
            raise ValueError(f"multipart upload {upload_id!r} not completed: {code}") from exc

    def abort_multipart(self, key: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().abort_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(check_key(key)), UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise


def open_store(settings: Settings) -> ObjectStore:
    """The store `settings` name: S3 for `STORAGE_URL=s3://bucket/prefix`, else DATA_DIR."""
    url = settings.storage_url.strip()
    if not url:
        return LocalStore(settings.data_dir)
    if url.startswith("s3://"):
        return S3Store.from_url(url, endpoint_url=settings.s3_endpoint_url or None)
    raise ConfigError(f"STORAGE_URL must be empty or s3://bucket/prefix, not {url!r}")
