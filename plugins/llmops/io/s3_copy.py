"""Resumable server-side S3 copies: single ``copy_object`` calls and ranged multipart copies.

Objects of at least ``part_size`` bytes are copied with a multipart upload of ranged
``upload_part_copy`` calls (no byte passes through this process), smaller ones with
``copy_object``; an interrupted multipart copy resumes from its finished parts. boto3 clients
are thread-safe; give the client ``max_pool_connections`` >= ``workers`` (botocore's default
pool is 10) or urllib3 warns that its pool is full.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
"""S3's smallest part (all but the last)."""
MAX_PARTS = 10_000
"""S3's largest part count per multipart upload."""
MAX_SINGLE_COPY = 5 * 1024 * MiB
"""S3's largest ``copy_object`` source."""
DEFAULT_PART_SIZE = 64 * MiB
DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class CopyJob:
    """One server-side copy."""

    src_bucket: str
    src_key: str
    dst_bucket: str
    dst_key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    source_etag: str | None = None


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges of the parts of a ``size``-byte object.

    The part size grows beyond ``part_size`` when needed to stay within S3's 10,000 parts.
    """
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size {part_size} is below S3's minimum part of {MIN_PART_SIZE} bytes; "
                         f"fix: use at least 5 MiB")
    part = max(part_size, math.ceil(size / MAX_PARTS))
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


def copy_objects(s3: Any, jobs: Sequence[CopyJob], *, part_size: int = DEFAULT_PART_SIZE,
                 workers: int = DEFAULT_WORKERS, resume: bool = False) -> dict[str, int]:
    """Copy every job server-side, in parallel; return ``dst_key -> parts`` (0 for a single copy).

    Objects of at least ``part_size`` bytes (or above S3's 5 GiB single-copy limit) take a
    multipart upload whose ranged part copies run in the same thread pool as the small copies.
    With ``resume`` (only for destinations whose content is fixed by their key), an unfinished
    multipart upload to the same key is continued: its finished parts of the right size are kept.
    """
    if part_size > MAX_SINGLE_COPY:
        raise ValueError(f"part_size {part_size} exceeds S3's 5 GiB copy limit; fix: use a smaller part size")
    threshold = part_size
    singles: list[CopyJob] = []
    uploads: list[_Multipart] = []
    for job in jobs:
        if job.size >= threshold and job.size > 0:
            uploads.append(_open_multipart(s3, job, part_size, resume))
        else:
            singles.append(job)
    tasks: list[tuple[Any, ...]] = [("single", job) for job in singles]
    for upload in uploads:
        tasks.extend(("part", upload, number) for number in upload.todo)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="s3copy") as pool:
        for _ in pool.map(lambda task: _run_copy_task(s3, task), tasks):
            pass
    result = {job.dst_key: 0 for job in singles}
    for upload in uploads:
        parts = [{"PartNumber": n, "ETag": upload.etags[n]} for n in sorted(upload.etags)]
        s3.complete_multipart_upload(Bucket=upload.job.dst_bucket, Key=upload.job.dst_key,
                                     UploadId=upload.upload_id, MultipartUpload={"Parts": parts})
        result[upload.job.dst_key] = len(parts)
    return result


@dataclass
class _Multipart:
    job: CopyJob
    upload_id: str
    ranges: list[tuple[int, int]]
    etags: dict[int, str]
    todo: list[int]


def _open_multipart(s3: Any, job: CopyJob, part_size: int, resume: bool) -> _Multipart:
    ranges = part_ranges(job.size, part_size)
    pending = _uploads_of(s3, job.dst_bucket, job.dst_key)
    upload_id = None
    etags: dict[int, str] = {}
    if resume and pending:
        newest = max(pending, key=lambda u: u["Initiated"])
        upload_id = newest["UploadId"]
        for part in _parts_of(s3, job.dst_bucket, job.dst_key, upload_id):
            number = int(part["PartNumber"])
            if 1 <= number <= len(ranges):
                start, end = ranges[number - 1]
                if int(part["Size"]) == end - start + 1:
                    etags[number] = part["ETag"]
        pending = [u for u in pending if u["UploadId"] != upload_id]
        log.info("resuming multipart copy to %s: %d of %d parts done", job.dst_key, len(etags), len(ranges))
    for stale in pending:  # unfinished uploads to this key that will never complete
        s3.abort_multipart_upload(Bucket=job.dst_bucket, Key=job.dst_key, UploadId=stale["UploadId"])
    if upload_id is None:
        extra = {"ContentType": job.content_type} if job.content_type else {}
        upload_id = s3.create_multipart_upload(Bucket=job.dst_bucket, Key=job.dst_key, Metadata=job.metadata,
                                               **extra)["UploadId"]
    todo = [n for n in range(1, len(ranges) + 1) if n not in etags]
    return _Multipart(job=job, upload_id=upload_id, ranges=ranges, etags=etags, todo=todo)


def _uploads_of(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    uploads = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
        uploads.extend(u for u in page.get("Uploads", []) if u["Key"] == key)
    return uploads


def _parts_of(s3: Any, bucket: str, key: str, upload_id: str) -> list[dict[str, Any]]:
    parts = []
    for page in s3.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        parts.extend(page.get("Parts", []))
    return parts


def _run_copy_task(s3: Any, task: tuple[Any, ...]) -> None:
    if task[0] == "single":
        job: CopyJob = task[1]
        extra: dict[str, Any] = {}
        if job.content_type:
            extra["ContentType"] = job.content_type
        if job.source_etag:
            extra["CopySourceIfMatch"] = job.source_etag
        s3.copy_object(Bucket=job.dst_bucket, Key=job.dst_key,
                       CopySource={"Bucket": job.src_bucket, "Key": job.src_key},
                       Metadata=job.metadata, MetadataDirective="REPLACE", **extra)
        return
    upload: _Multipart = task[1]
    number: int = task[2]
    job = upload.job
    start, end = upload.ranges[number - 1]
    extra = {"CopySourceIfMatch": job.source_etag} if job.source_etag else {}
    answer = s3.upload_part_copy(Bucket=job.dst_bucket, Key=job.dst_key, UploadId=upload.upload_id,
                                 PartNumber=number, CopySource={"Bucket": job.src_bucket, "Key": job.src_key},
                                 CopySourceRange=f"bytes={start}-{end}", **extra)
    upload.etags[number] = answer["CopyPartResult"]["ETag"]  # distinct keys per thread: safe under the GIL
