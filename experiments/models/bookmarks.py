"""Team bookmarks: an experiment, or a saved view of the experiments page."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class BookmarkKind(models.TextChoices):
    EXPERIMENT = "experiment", "Experiment"
    VIEW = "view", "Saved view"


class Bookmark(models.Model):
    """A team bookmark: an experiment, or a saved query of the experiments page."""

    workspace = models.ForeignKey("experiments.Workspace", on_delete=models.CASCADE, related_name="bookmarks")
    kind = models.CharField(max_length=10, choices=BookmarkKind.choices)
    experiment_id = models.CharField(max_length=100, blank=True)
    experiment_name = models.CharField(max_length=500, blank=True)
    # Only the query string of our own experiments page, normalised (never a URL).
    view_query = models.CharField(max_length=1000, blank=True)
    title = models.CharField(max_length=120, blank=True)
    note = models.TextField(max_length=1000, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_by_name = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "experiment_id"],
                condition=Q(kind="experiment"),
                name="bookmark_unique_ws_experiment",
            ),
            models.UniqueConstraint(
                fields=["workspace", "view_query"],
                condition=Q(kind="view"),
                name="bookmark_unique_ws_view",
            ),
            models.CheckConstraint(
                condition=(Q(kind="experiment") & ~Q(experiment_id="") & Q(view_query=""))
                | (Q(kind="view") & Q(experiment_id="")),
                name="bookmark_kind_fields_consistent",
            ),
        ]
        indexes = [
            # Bookmarks strip and page: one workspace's bookmarks, newest first.
            models.Index(fields=["workspace", "-created_at"], name="bookmark_ws_created_idx"),
        ]

    def __str__(self) -> str:
        return self.title or self.experiment_name or self.experiment_id
