from django.apps import AppConfig


class SteeringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "steering"

    def ready(self) -> None:
        # In ready(): the collectors import the models, which need the app registry.
        from steering.serving import collectors

        collectors.install()
