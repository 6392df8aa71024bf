"""Where a workspace lives, and what a person may do in it."""

from __future__ import annotations

from django.db import models


class Region(models.TextChoices):
    US = "us", "US"
    EU = "eu", "EU"
    IN = "in", "India"


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    CONCLUDER = "concluder", "Concluder"
    ADMIN = "admin", "Admin"


# The roles that may force conclude, record decisions and approve requests.
CONCLUDING_ROLES = frozenset({Role.CONCLUDER, Role.ADMIN})
