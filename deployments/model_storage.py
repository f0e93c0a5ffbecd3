"""Model files in the "models" storage (settings.STORAGES): uploaded chunks, the files
they assemble into, and removing a model's directory. Only Django's storage API is used,
so a local directory and an S3-compatible bucket behave the same: chunks are separate
objects (object stores cannot write at an offset) and are joined when the last arrives."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from typing import IO

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

_COPY_BLOCK = 1024 * 1024
# Assembled files stay in memory up to this size, then spill to a temporary file.
_SPOOL_BYTES = 16 * 1024 * 1024


def model_storage() -> Storage:
    return storages["models"]


def local_directory(prefix: str) -> str | None:
    """The directory on this machine that holds a model's files, when the storage is a local
    filesystem; None for an object store (or any other backend), whose files a replica
    cannot read in place."""
    storage = model_storage()
    return storage.path(prefix) if isinstance(storage, FileSystemStorage) else None


def upload_prefix(*, organization_id: str, upload_id: str) -> str:
    """Where an upload's files, and then the registered model's, live."""
    return f"models/{organization_id}/{upload_id}/"


def _parts_prefix(*, upload_id: str, path: str) -> str:
    return f"parts/{upload_id}/{hashlib.sha256(path.encode()).hexdigest()[:32]}/"


def save_chunk(*, upload_id: str, path: str, offset: int, data: bytes) -> None:
    name = f"{_parts_prefix(upload_id=upload_id, path=path)}{offset:016d}"
    storage = model_storage()
    if storage.exists(name):  # a retried chunk whose first try was not recorded
        storage.delete(name)
    storage.save(name, ContentFile(data))


def _part_names(prefix: str) -> list[str]:
    storage = model_storage()
    try:
        _, files = storage.listdir(prefix)
    except FileNotFoundError:
        return []
    return [prefix + name for name in sorted(files)]


def assemble(*, upload_id: str, path: str, destination: str, sha256: str) -> str | None:
    """Joins a file's chunks into `destination` if their sha256 is the declared one; returns
    the digest they had. The chunks are removed either way."""
    storage = model_storage()
    parts = _part_names(_parts_prefix(upload_id=upload_id, path=path))
    digest = hashlib.sha256()
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as joined:
        for part in parts:
            with storage.open(part, "rb") as chunk:
                while block := chunk.read(_COPY_BLOCK):
                    digest.update(block)
                    joined.write(block)
        if digest.hexdigest() == sha256:
            joined.seek(0)
            if storage.exists(destination):
                storage.delete(destination)
            storage.save(destination, File(joined, name=destination))
    for part in parts:
        storage.delete(part)
    return digest.hexdigest()


def discard_parts(*, upload_id: str, path: str) -> None:
    storage = model_storage()
    for part in _part_names(_parts_prefix(upload_id=upload_id, path=path)):
        storage.delete(part)


def delete_tree(prefix: str) -> None:
    """Removes every file under `prefix` (a directory name ending in "/")."""
    storage = model_storage()
    try:
        directories, files = storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        storage.delete(prefix + name)
    for directory in directories:
        delete_tree(f"{prefix}{directory}/")


class StoredDirectory:
    """An uploaded directory as deployments.model_files reads it."""

    def __init__(self, *, prefix: str, sizes: Mapping[str, int]) -> None:
        self.prefix = prefix
        self.sizes = sizes

    def open(self, path: str) -> IO[bytes]:
        return model_storage().open(self.prefix + path, "rb")
