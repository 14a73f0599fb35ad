"""The site's URLconf plus two views that fail as a bug would, for the error-page and
error-log tests: one plain Django view and one DRF view."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from steerlab_site.urls import urlpatterns as site_urlpatterns


def broken_page(request):
    return 1 / 0


class BrokenApi(APIView):
    def post(self, request):
        request.data  # parsed, as a real view would, so the body has been read
        return Response({"ratio": 1 / 0})


urlpatterns = [
    path("boom/", broken_page),
    path("api/boom/", BrokenApi.as_view()),
    *site_urlpatterns,
]
