from django.contrib import admin
from django.urls import include, path

from steerlab_site import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    # ---- steering pages and the REST API (/api/, /api/schema/) mount here ----
]
