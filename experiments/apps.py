from __future__ import annotations

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "experiments"
    verbose_name = "Experiment Desk"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from experiments.signin.middleware import stamp_session_on_login

        user_logged_in.connect(stamp_session_on_login, dispatch_uid="experiments-session-start")
