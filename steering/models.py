"""Preference dimensions and the vector sets computed from them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver


class PreferenceDimension(models.Model):
    """One axis of preference, negative end ↔ positive end (Casual ↔ Formal). The examples
    train the steering vector; the reference texts, kept apart, judge its effect."""

    name = models.SlugField(max_length=50, unique=True)
    negative_label = models.CharField(max_length=60)
    positive_label = models.CharField(max_length=60)
    description = models.TextField(blank=True)
    positive_examples = models.JSONField(default=list)
    negative_examples = models.JSONField(default=list)
    reference_positive = models.JSONField(default=list)
    reference_negative = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.negative_label} ↔ {self.positive_label})"


class VectorSet(models.Model):
    """Steering vectors for some dimensions on one model, computed in the background.
    Shared sets have no owner and are made by staff; a user's own sets are private."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    class Method(models.TextChoices):
        CAA = "caa", "Difference of means (CAA)"
        PROBE = "probe", "Logistic-regression probe"
        PCA = "pca", "PCA of paired differences"

    name = models.CharField(max_length=100)
    model_id = models.CharField(max_length=200)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.CAA)
    dimensions = models.ManyToManyField(PreferenceDimension, related_name="vector_sets")
    layers = models.JSONField(default=list, blank=True)
    num_layers = models.PositiveIntegerField(null=True, blank=True)
    hidden_size = models.PositiveIntegerField(null=True, blank=True)
    functional_range = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to="vectors/", blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="vector_sets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} [{self.model_id}, {self.status}]"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY


@receiver(post_delete, sender=VectorSet)
def _delete_vector_file(sender, instance: VectorSet, **kwargs) -> None:
    # After commit: a rolled-back delete must not lose the file.
    if instance.file:
        storage, name = instance.file.storage, instance.file.name
        transaction.on_commit(lambda: storage.delete(name))
