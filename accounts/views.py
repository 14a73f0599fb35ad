from functools import wraps

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render

from accounts.forms import SignupForm
from ops.throttling import client_address, credentials_refused, credentials_spend, too_many_message


def _refused(request, template: str, form, *, wait: int, what: str, extra: dict | None = None):
    """The page again with the form, saying in words why nothing happened: 429 and Retry-After."""
    context = {**(extra or {}), "form": form, "next": request.POST.get("next", ""),
               "refused": too_many_message(wait, what)}
    response = render(request, template, context, status=429)
    response["Retry-After"] = str(wait)
    return response


class LoginView(auth_views.LoginView):
    """Django's log-in page, throttled per client address and per account name. Only failed
    attempts count, so a user who types the password right is never held up by others'
    successes; a guesser is stopped whatever address or account name they rotate."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        wait = credentials_refused(scope="login", address=client_address(request), username=username)
        if wait:
            return _refused(request, self.template_name, self.form_class(request), wait=wait, what="failed log-in attempts")
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        credentials_spend(scope="login", address=client_address(self.request), username=self.request.POST.get("username"))
        return super().form_invalid(form)


def throttle_log_in(view, *, template: str, form_class, context=lambda request: {}):
    """A log-in view of someone else's (the admin's) with the same budget as LoginView: refused
    while the address or account name has none left, and a failure (any answer but the
    redirect of a success) spends one."""

    @wraps(view)
    def throttled(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        address, username = client_address(request), request.POST.get("username", "")
        wait = credentials_refused(scope="login", address=address, username=username)
        if wait:
            form = form_class(request)
            return _refused(request, template, form, wait=wait, what="failed log-in attempts", extra=context(request))
        response = view(request, *args, **kwargs)
        if response.status_code != 302:
            credentials_spend(scope="login", address=address, username=username)
        return response

    return throttled


def signup(request):
    if request.user.is_authenticated:
        return redirect("home")

    form = SignupForm(request.POST or None)
    if request.method == "POST":
        # Every attempt counts: each success is an account, the cheapest thing to abuse.
        address, username = client_address(request), request.POST.get("username", "")
        wait = credentials_refused(scope="signup", address=address, username=username)
        if wait:
            return _refused(request, "registration/signup.html", SignupForm(), wait=wait, what="sign-ups")
        credentials_spend(scope="signup", address=address, username=username)
        if form.is_valid():
            user = form.save()
            login(request, user)
            # The home page greets a new account once, with the way into the chat.
            request.session["welcome"] = True
            return redirect("home")

    return render(request, "registration/signup.html", {"form": form})
