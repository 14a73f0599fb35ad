from django.contrib import admin
from django.urls import include, path

from steerlab_site import views

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("steering.api.urls")),
    path("v1/", include("steering.chat.openai.urls")),
    path("", include("ops.urls")),
    # ---- steering pages mount here ----
    path("", include("steering.urls")),
]
