from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.shortcuts import render


def home(request):
    return render(request, "home.html", {"welcome": request.session.pop("welcome", False)})


def favicon(request):
    """/favicon.ico, which browsers ask for where a page names no icon: the site's SVG icon."""
    response = HttpResponse(Path(finders.find("favicon.svg")).read_bytes(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response
