"""`shared.limits.tus_part_bytes`: one tus upload is one S3 multipart upload, so the largest
upload the gateway accepts must fit S3's part rules."""

from __future__ import annotations

import pytest

from shared.limits import (
    MULTIPART_MAX_PARTS,
    MULTIPART_MIN_PART_BYTES,
    S3_MAX_OBJECT_BYTES,
    TUS_PART_ROUND_BYTES,
    tus_part_bytes,
)
from shared.settings import Settings


@pytest.mark.parametrize("length", [
    1, MULTIPART_MIN_PART_BYTES, MULTIPART_MIN_PART_BYTES * MULTIPART_MAX_PARTS,
    MULTIPART_MIN_PART_BYTES * MULTIPART_MAX_PARTS + 1,
    Settings(_env_file=None).max_upload_size,  # type: ignore[call-arg]
    S3_MAX_OBJECT_BYTES,
])
def test_every_upload_fits_in_s3_parts(length: int) -> None:
    size = tus_part_bytes(length)
    parts = -(-length // size)
    assert parts <= MULTIPART_MAX_PARTS
    assert size >= MULTIPART_MIN_PART_BYTES and size % TUS_PART_ROUND_BYTES == 0


def test_the_part_grows_only_when_it_must() -> None:
    assert tus_part_bytes(100 * 1024**3) == 11 * 1024**2  # the default MAX_UPLOAD_SIZE
    assert tus_part_bytes(MULTIPART_MIN_PART_BYTES * MULTIPART_MAX_PARTS) == \
        MULTIPART_MIN_PART_BYTES
    # the smallest part that still covers the length: one MiB less would need a 10 001st part
    for length in (7 * 1024**3 * 10, 1024**4, S3_MAX_OBJECT_BYTES):
        smaller = tus_part_bytes(length) - TUS_PART_ROUND_BYTES
        assert smaller < MULTIPART_MIN_PART_BYTES or -(-length // smaller) > MULTIPART_MAX_PARTS
