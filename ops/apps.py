from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: request logging and ids, security headers, Prometheus metrics."""

    name = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ops import metrics

        metrics.install()
