"""Sizes and limits that more than one module uses, each with the reason for its value.

Timing constants live in `shared.timing`; a limit that only one module uses stays there,
named, next to its user.
"""

from __future__ import annotations

__all__ = [
    "ERROR_MAX_CHARS",
    "JOB_FOLDERS_CACHED",
    "MAX_ROW_OFFSET",
    "MAX_STAGE_BATCH",
    "MAX_WORKER_CAPACITY",
    "MULTIPART_MAX_PARTS",
    "MULTIPART_MIN_PART_BYTES",
    "NAME_MAX_BYTES",
    "NAME_PART_MAX_BYTES",
    "OBJECT_COPY_BYTES",
    "OBJECT_PUT_CONCURRENCY",
    "OBJECT_PUT_FILE_CONCURRENCY",
    "OBJECT_PUT_FILE_PART_BYTES",
    "OBJECT_READ_AHEAD_BYTES",
    "S3_MAX_OBJECT_BYTES",
    "SNAPSHOT_THREADS",
    "TAR_BLOCK_BYTES",
    "TEMP_NAME_TRIES",
    "TUS_PART_ROUND_BYTES",
    "USTAR_MAGIC_SLICE",
    "WORKER_IO_OVERLAP",
    "ZIP_CHUNK_BYTES",
    "tus_part_bytes",
]

ERROR_MAX_CHARS = 4000
"""Longest error message kept on a task row: a worker's traceback-sized detail is cut here,
so `/jobs/{id}/tasks` pages and report.csv stay small."""
MAX_WORKER_CAPACITY = 64
"""Most concurrent requests a balancer sends one worker, whatever its heartbeat or /info
claims: a worker that says 10**6 must not draw the whole queue to itself. Our stages ask for
2 × their batch size (16 by default), so 64 leaves room for a big GPU."""
NAME_MAX_BYTES = 1024
"""Longest archive member name (UTF-8 bytes) we accept, and how much of a refused one the
user is shown."""
NAME_PART_MAX_BYTES = 255
"""Longest single path component (UTF-8 bytes): what ext4 and most file systems take."""
TAR_BLOCK_BYTES = 512
"""A tar header block; also the bytes read to sniff an upload's kind."""
USTAR_MAGIC_SLICE = slice(257, 262)
"""Where a POSIX tar header holds its `ustar` magic."""

MAX_ROW_OFFSET = 2**62
"""The largest `offset=` a listing takes: a 64-bit SQLite integer holds it, a larger one would
be an OverflowError (a 500) instead of an empty page."""

MAX_STAGE_BATCH = 256
"""Most stage requests one `<route>/batch` call carries (STAGE_BATCH_SIZE is capped here): a
balancer or worker validates and holds a whole batch at once, so its size bounds their memory
per call; 256 small requests are a few hundred KiB of JSON."""


# --- object storage (shared.objects) ------------------------------------------------------
MULTIPART_MAX_PARTS = 10_000
"""Most parts one multipart upload may have: S3's own limit, kept by LocalStore too, so a tus
upload sized its parts for S3 (part size grows with the declared length) works on both."""
MULTIPART_MIN_PART_BYTES = 5 * 1024**2
"""Smallest part S3 takes in a multipart upload, the last part excepted (S3 refuses
`complete` otherwise). LocalStore does not enforce it; a caller sizes parts for S3."""
OBJECT_PUT_FILE_PART_BYTES = 16 * 1024**2
"""`put_file` of a file up to this size is one PUT (read into memory: an image, a report);
above it, a multipart upload in parts of this size, or larger where 10 000 of them would not
cover the file: a single PUT of many GiB would restart from zero on one network error, and
parts go in parallel."""
OBJECT_PUT_FILE_CONCURRENCY = 4
"""Parts of one `put_file` in flight at once (each held in memory): 4 × 16 MiB per file, so
the intake's parallel uploads stay bounded too."""
OBJECT_READ_AHEAD_BYTES = 8 * 1024**2
"""How much `open_read` of an S3 object fetches per ranged GET: zipfile and tarfile read in
small pieces and seek; a GET per `read(4096)` would be a round trip each, while 8 MiB keeps
the number of requests low and the memory per open archive bounded."""


# --- intake on object storage (gateway.intake.landing, gateway.intake.tus_parts) -----------
OBJECT_PUT_CONCURRENCY = 16
"""Extracted inputs uploaded at once by ingest on S3: a batch is hundreds of small images, one
PUT each, and a PUT's time is mostly the round trip, so sixteen in flight keep the link busy
without holding more than sixteen files' worth of buffers."""
OBJECT_COPY_BYTES = 1024**2
"""Chunk of a copy between an object and a local file (a single image or video fetched to
scratch for decoding)."""
S3_MAX_OBJECT_BYTES = 5 * 1024**4
"""S3's largest object (5 TiB): on object storage a tus upload declaring more is refused (413)
whatever MAX_UPLOAD_SIZE says, since it could never be completed."""
TUS_PART_ROUND_BYTES = 1024**2
"""A tus upload's part size (`tus_part_bytes`) is a whole number of these."""


def tus_part_bytes(length: int) -> int:
    """The part size of a tus upload of `length` bytes on S3: one tus upload is one multipart
    upload, and S3 allows MULTIPART_MAX_PARTS parts of at least MULTIPART_MIN_PART_BYTES (the
    last excepted). So: the smallest whole MiB that covers `length` in 10 000 parts, never under
    5 MiB — 5 MiB up to 48.8 GiB, 11 MiB for the default 100 GiB MAX_UPLOAD_SIZE, 525 MiB for
    S3's own 5 TiB object limit. Every part but the last has exactly this size, so a part count
    is an offset. Memory: a PATCH holds at most two parts (one gathering, one being sent)."""
    per_part = -(-max(length, 1) // MULTIPART_MAX_PARTS)
    rounded = -(-per_part // TUS_PART_ROUND_BYTES) * TUS_PART_ROUND_BYTES
    return max(MULTIPART_MIN_PART_BYTES, rounded)


# --- the read paths of a big job (issue 17, "A 100 000-image job") -----------------------
SNAPSHOT_THREADS = 4
"""Threads (and SQLite connections) of the gateway's one-hop reads (`Database.snapshot`:
`/status`, task pages, the report's and zip's walk). Their own pool, so a poll never queues
behind the file work of the default executor; four readers are plenty for WAL snapshots."""
ZIP_CHUNK_BYTES = 1024**2
"""The download's zip is sent in pieces of about this size: the zip library yields a header,
the data and a descriptor per member (three tiny pieces for a 150-byte PNG), and every piece
sent alone would cost a thread hop and a socket write. One MiB per piece: the transfer runs
at file-read speed, and memory per download stays at one piece."""
# --- throughput (issue 17: orchestration at >= 300 tasks/s) -----------------------------------
TEMP_NAME_TRIES = 100
"""Names an atomic write tries for its temporary file (`shared.storage._open_temp`) before it
gives up: a name is taken only by a leftover of a dead process that had the same pid, so a
second try nearly always succeeds; the bound stops a folder full of leftovers looping."""
JOB_FOLDERS_CACHED = 4096
"""Resolved job folders a `Storage` remembers (`Storage._job_folder`): a worker serves a few
jobs at once; the memo is emptied when full, not grown."""
WORKER_IO_OVERLAP = 1
"""Thread hops a worker runs beside its `concurrency` for a batch call's file work
(`shared.worker.server`): one item's file I/O (a file's creation waits on the volume: 0.1 to
4 ms on the shared test machine's disk, mostly not CPU) overlaps another item's work. 3 was
tried (issue 17) and was not told apart from the machine's noise, while it would let a
comparison hold four full-size images at once instead of two: kept at the old bound."""
