"""Chunked, resumable uploads of a model directory: start one with the files declared,
receive each file's bytes in order (a client asks how far a file got and continues from
there), verify each file's sha256 when its last byte arrives, and complete: check the
directory (deployments.model_files) and register the model (deployments.registry)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from deployments import model_files, model_storage, registry
from deployments.models import CatalogModel, ModelUpload, ModelUploadFile
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization, Role
from tenancy.text import has_control_characters

MAX_PATH_LENGTH = 255
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class UnknownFile(ServiceError):
    status_code = 404
    code = "not_found"


class Unprocessable(ServiceError):
    status_code = 422
    code = "validation_failed"


class ChecksumMismatch(ServiceError):
    status_code = 422
    code = "checksum_mismatch"


@dataclass(frozen=True)
class DeclaredFile:
    path: str
    size: int
    sha256: str


def uploads(org: Organization) -> QuerySet[ModelUpload]:
    return ModelUpload.objects.for_org(org)


def path_problem(path: str) -> str | None:
    """Why a declared path cannot be stored, if it cannot: relative, forward slashes, no
    "..", "." or empty parts, no control characters."""
    if not path or len(path) > MAX_PATH_LENGTH:
        return f"must be 1-{MAX_PATH_LENGTH} characters"
    if "\\" in path:
        return "must use forward slashes, not backslashes"
    if path.startswith("/") or ":" in path:
        return "must be relative to the model directory (no leading slash or drive)"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return 'must not contain "..", "." or empty parts'
    if has_control_characters(path):
        return "must not contain control characters"
    return None


def _check_files(files: list[DeclaredFile]) -> None:
    if not files:
        raise ServiceError("Declare at least one file.", field="files")
    if len(files) > settings.MODEL_UPLOAD_MAX_FILES:
        raise ServiceError(f"An upload holds at most {settings.MODEL_UPLOAD_MAX_FILES} files; this declares {len(files)}.", field="files")
    total = sum(file.size for file in files)
    if total > settings.MODEL_UPLOAD_MAX_BYTES:
        raise ServiceError(f"An upload holds at most {settings.MODEL_UPLOAD_MAX_BYTES} bytes; these files total {total}.", field="files")
    seen: set[str] = set()
    for file in files:
        problem = path_problem(file.path)
        if problem:
            raise ServiceError(f"File path {file.path!r} {problem}.", field="files")
        if file.path in seen:
            raise ServiceError(f"File {file.path!r} is declared twice.", field="files")
        seen.add(file.path)
        if file.size == 0 and file.sha256 != EMPTY_SHA256:
            raise ServiceError(f"File {file.path!r} is empty, so its sha256 must be {EMPTY_SHA256}.", field="files")


@transaction.atomic
def start_upload(
    ctx: OrgContext, *, name: str, files: list[DeclaredFile], task: str = "", license: str = "", description: str = ""
) -> ModelUpload:
    ctx.require_role(Role.MEMBER, "upload models")
    registry.check_name(ctx.organization, name)
    for field, value in (("license", license), ("description", description)):
        if has_control_characters(value):
            raise ServiceError(f"The {field} cannot contain line breaks, tabs or other control characters.", field=field)
    _check_files(files)
    open_now = ModelUpload.objects.for_org(ctx.organization).filter(status=ModelUpload.Status.OPEN, expires_at__gt=timezone.now())
    if open_now.count() >= settings.MODEL_UPLOADS_OPEN_PER_ORGANIZATION:
        # Each open upload may fill up to MODEL_UPLOAD_MAX_BYTES of storage.
        raise Conflict(
            f"This organization already has {settings.MODEL_UPLOADS_OPEN_PER_ORGANIZATION} uploads open; "
            "complete one or let it expire before starting another.",
            field="name",
        )
    upload = ModelUpload.objects.create(
        organization=ctx.organization,
        name=name,
        task=task,
        license=license,
        description=description,
        created_by=ctx.user,
        expires_at=timezone.now() + timedelta(hours=settings.MODEL_UPLOAD_TTL_HOURS),
    )
    ModelUploadFile.objects.bulk_create(
        ModelUploadFile(
            organization=ctx.organization,
            upload=upload,
            path=file.path,
            size=file.size,
            sha256=file.sha256,
            received=0,
            verified=file.size == 0,
        )
        for file in files
    )
    audit.record(
        ctx,
        "model_upload.created",
        target_type="model_upload",
        target_id=upload.id,
        after={"name": name, "files": len(files), "bytes": sum(file.size for file in files)},
    )
    return upload


def _lock_open(ctx: OrgContext, upload: ModelUpload, *, now: Any) -> ModelUpload:
    locked = ModelUpload.objects.for_org(ctx.organization).select_for_update().get(pk=upload.pk)
    if locked.status != ModelUpload.Status.OPEN:
        raise Conflict(f"This upload is {locked.status}; start a new upload to send files again.")
    if locked.expires_at <= now:
        raise Conflict(f"This upload expired at {locked.expires_at.isoformat()}; start a new upload.")
    return locked


def receive_chunk(ctx: OrgContext, upload: ModelUpload, *, path: str, offset: int, data: bytes) -> ModelUploadFile:
    """Stores `data` at `offset` of the declared file `path`. Offsets must follow on: a
    client that lost track asks the upload's status and continues from `received`. The
    last byte triggers the sha256 check; a mismatch discards the file's bytes (422)."""
    entry, mismatch = _receive(ctx, upload, path=path, offset=offset, data=data)
    if mismatch is not None:
        raise ChecksumMismatch(
            f"{path} arrived with sha256 {mismatch}, but {entry.sha256} was declared: its bytes were discarded. "
            "Check the file and the declared checksum, then upload it again from offset 0.",
            field="sha256",
        )
    return entry


@transaction.atomic
def _receive(ctx: OrgContext, upload: ModelUpload, *, path: str, offset: int, data: bytes) -> tuple[ModelUploadFile, str | None]:
    ctx.require_role(Role.MEMBER, "upload models")
    upload = _lock_open(ctx, upload, now=timezone.now())
    entry = ModelUploadFile.objects.for_org(ctx.organization).filter(upload=upload, path=path).first()
    if entry is None:
        raise UnknownFile(f"This upload declares no file {path!r}; declare every file when you start an upload.")
    if not data:
        return entry, None  # an empty chunk changes nothing and answers the file's progress
    if entry.verified:
        raise Conflict(f"{path} has already arrived whole and been verified.")
    if offset != entry.received:
        raise Conflict(f"{path} has {entry.received} bytes so far; send the next chunk at offset={entry.received}.", field="offset")
    if offset + len(data) > entry.size:
        raise ServiceError(f"This chunk runs to byte {offset + len(data)}, past {path}'s declared size of {entry.size}.", field="offset")
    model_storage.save_chunk(upload_id=upload.pk, path=path, offset=offset, data=data)
    entry.received = offset + len(data)
    mismatch = None
    if entry.received == entry.size:
        destination = model_storage.upload_prefix(organization_id=ctx.organization.pk, upload_id=upload.pk) + path
        digest = model_storage.assemble(upload_id=upload.pk, path=path, destination=destination, sha256=entry.sha256)
        if digest == entry.sha256:
            entry.verified = True
        else:
            entry.received, mismatch = 0, digest
    entry.save(update_fields=["received", "verified"])
    return entry, mismatch


def complete_upload(ctx: OrgContext, upload: ModelUpload) -> CatalogModel:
    """Checks the directory and registers the model (201), or lists every problem (422)
    and fails the upload, whose files are removed. Unfinished files answer 409 and leave
    the upload open."""
    outcome = _complete(ctx, upload)
    if isinstance(outcome, CatalogModel):
        return outcome
    if isinstance(outcome, Conflict):
        raise outcome
    raise Unprocessable(
        "The model cannot be registered: " + " ".join(f"({number}) {problem}" for number, problem in enumerate(outcome, 1)),
        field="files",
        details=outcome,
    )


@transaction.atomic
def _complete(ctx: OrgContext, upload: ModelUpload) -> CatalogModel | Conflict | list[str]:
    ctx.require_role(Role.MEMBER, "upload models")
    upload = _lock_open(ctx, upload, now=timezone.now())
    files = list(ModelUploadFile.objects.for_org(ctx.organization).filter(upload=upload))
    unfinished = [file for file in files if not file.verified]
    if unfinished:
        raise Conflict(
            "These files have not fully arrived: "
            + "; ".join(f"{file.path} ({file.received} of {file.size} bytes, continue at offset={file.received})" for file in unfinished)
            + "."
        )
    prefix = model_storage.upload_prefix(organization_id=ctx.organization.pk, upload_id=upload.pk)
    try:
        registry.check_name(ctx.organization, upload.name)
    except Conflict as taken:
        _fail(ctx, upload, prefix=prefix, problems=[taken.message])
        return taken
    inspection = model_files.inspect(
        model_storage.StoredDirectory(prefix=prefix, sizes={file.path: file.size for file in files}), task=upload.task
    )
    if inspection.problems:
        _fail(ctx, upload, prefix=prefix, problems=inspection.problems)
        return inspection.problems
    model = registry.register(ctx, upload=upload, inspection=inspection)
    upload.status, upload.model = ModelUpload.Status.COMPLETE, model
    upload.save(update_fields=["status", "model"])
    return model


def _fail(ctx: OrgContext, upload: ModelUpload, *, prefix: str, problems: list[str]) -> None:
    upload.status, upload.problems = ModelUpload.Status.FAILED, problems
    upload.save(update_fields=["status", "problems"])
    audit.record(ctx, "model_upload.failed", target_type="model_upload", target_id=upload.id, after={"problems": problems})
    transaction.on_commit(lambda: model_storage.delete_tree(prefix))
