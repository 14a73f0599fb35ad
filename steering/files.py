"""The files the site writes (vector files, evaluation plots), through Django's storage (the
FileField's own): stored, read, copied out and deleted by their storage name, never by a path
under MEDIA_ROOT, so that another storage backend takes them all."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from django.core.files import File
from django.core.files.storage import Storage
from django.db.models.fields.files import FieldFile

from steering.engine import SteeringVectors


class VectorSetUnavailable(ValueError):
    """A ready vector set whose file is missing or unusable; it has been marked unavailable.
    The message names the set, never a path."""


def store(storage: Storage, name: str, write: Callable[[Path], object]) -> str:
    """Write a file with `write(path)` (the engine and matplotlib write to a path) and store it
    as `name`, or a free name beside it: the name stored."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        write(path)
        with path.open("rb") as written:
            return storage.save(name, File(written))


def vectors_load(file: FieldFile) -> SteeringVectors:
    """The vectors of a stored vector file. safetensors maps a local file, so this is the one
    place a vector file is read by path: the storage's own path for its name."""
    return SteeringVectors.load(Path(file.storage.path(file.name)))


def copy_out(file: FieldFile, target: Path) -> Path:
    """Copy a stored file to `target`, outside the storage (the management commands' output)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with file.open("rb") as source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    return target
