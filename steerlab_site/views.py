from django.shortcuts import redirect, render
from django.templatetags.static import static


def home(request):
    return render(request, "home.html", {"welcome": request.session.pop("welcome", False)})


def favicon(request):
    """/favicon.ico, which browsers ask for on pages without an icon link (admin, API docs)."""
    return redirect(static("favicon.svg"), permanent=True)
