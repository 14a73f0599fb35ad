"""The life of a background job: a row (a vector set being computed, an evaluation) is queued
in the django-q2 cluster after commit, then runs: running → its work → ready, or failed with
the error, any file it stored removed. Both kinds of job live it through `run`, and the
cluster's "task finished" hooks through `task_finished`."""

from __future__ import annotations

import logging
from typing import Callable

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from steering import files
from steering.models import VectorSet

log = logging.getLogger(__name__)

Status = VectorSet.Status  # an Evaluation's too: pending, running, then ready or failed
ERROR_CHARS = 2000


def enqueue(task: str, pk: int, *, name: str, sync: bool = False) -> None:
    """Queue steering.tasks.`task`(pk) once the current transaction commits (a worker must find
    the row), with steering.tasks.`task`_finished as the hook the cluster calls whatever
    becomes of it. `sync` (or Q_CLUSTER's) runs it in this process instead."""
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task(
            f"steering.tasks.{task}",
            pk,
            task_name=f"{name}-{pk}",
            hook=f"steering.tasks.{task}_finished",
            sync=sync or settings.Q_CLUSTER.get("sync", False),
        )
    )


def task_finished(model: type[models.Model], task) -> None:
    """The cluster gave up on a job (its worker died, its last attempt failed): a row still
    pending or running is marked failed, so nobody waits on it forever."""
    if task.success:
        return
    model.objects.filter(pk=task.args[0], status__in=[Status.PENDING, Status.RUNNING]).update(
        status=Status.FAILED, error=f"The background task failed: {str(task.result)[:500]}"
    )


class Job:
    """What a job's work is handed: progress to report, and files to store."""

    def __init__(self, row: models.Model, file_field: str, report: Callable[[int], None] | None) -> None:
        self.row, self.report = row, report
        self.storage = getattr(row, file_field).storage
        self.stored: list[str] = []

    def progress(self, done: float, total: float) -> None:
        """Write the row's `progress` (0–99: 100 only once its result is stored) when it changes.
        Raises the model's DoesNotExist when the row has been deleted meanwhile: the work is moot."""
        row = self.row
        percent = min(99, int(100 * done / max(total, 1)))
        if percent != row.progress:
            row.progress = percent
            if not type(row).objects.filter(pk=row.pk).update(progress=percent):
                raise type(row).DoesNotExist(f"{type(row).__name__} {row.pk} was deleted while it ran")
            if self.report:
                self.report(percent)

    def store(self, name: str, write: Callable) -> str:
        """Store a file the job wrote (files.store); it is removed again if the job fails."""
        stored = files.store(self.storage, name, write)
        self.stored.append(stored)
        return stored

    def discard(self) -> None:
        for name in self.stored:
            self.storage.delete(name)


def run(
    row: models.Model,
    work: Callable[[Job], dict],
    *,
    file_field: str,
    report: Callable[[int], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> models.Model:
    """Run one job on `row`: mark it running, call `work(job)`, which returns the finished row's
    fields (its stored file's name under `file_field` among them), and write them with "ready"
    and progress 100; `on_ready` runs after that commits. Any failure marks it failed with a
    readable error and leaves no new file behind; a row deleted before or while it runs stays
    deleted: the work ends quietly, its file gone."""
    model = type(row)
    label = f"{model.__name__} {row.pk}"
    if not model.objects.filter(pk=row.pk).update(status=Status.RUNNING, progress=0, error=""):
        log.info("%s was deleted before it started", label)
        return row
    row.refresh_from_db()
    # A job run again that fails keeps the file of the last run that succeeded: the row is
    # marked failed, but a result once committed is not thrown away, nor left orphaned.
    kept = getattr(row, file_field).name or ""
    job = Job(row, file_field, report)
    try:
        fields = work(job)
        with transaction.atomic():
            # An update, not save(): save() would insert the row again if it was deleted
            # meanwhile, bringing it back as "ready".
            if not model.objects.filter(pk=row.pk).update(
                status=Status.READY, progress=100, updated_at=timezone.now(), **fields
            ):
                raise model.DoesNotExist(f"{label} was deleted while it ran")
            replaced = fields[file_field]
            if kept and kept != replaced:  # a job run again replaces its old file
                transaction.on_commit(lambda: job.storage.delete(kept))
            if on_ready is not None:
                transaction.on_commit(on_ready)
    except model.DoesNotExist:
        log.info("%s was deleted while it ran; its work is dropped", label)
        job.discard()
        return row
    except BaseException as exc:
        # BaseException too: django-q2 ends a task that runs past its timeout by raising
        # TimeoutException, a SystemExit, inside it; that must also leave "failed" and no file.
        log.exception("%s failed", label)
        job.discard()
        failed = model.objects.filter(pk=row.pk).update(
            status=Status.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:ERROR_CHARS], **{file_field: kept}
        )
        if failed:
            row.refresh_from_db()
        if not isinstance(exc, Exception):
            raise
        return row
    for field, value in fields.items():
        if field == file_field:
            getattr(row, field).name = value
        else:
            setattr(row, field, value)
    row.status, row.progress = Status.READY, 100
    return row
