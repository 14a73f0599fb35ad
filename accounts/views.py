from functools import wraps

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render

from accounts.forms import SignupForm
from ops.throttling import LoginAttempt, client_address, signup_take, too_many_message


def _refused(request, template: str, form, *, wait: int, what: str, extra: dict | None = None):
    """The page again with the form, saying in words why nothing happened: 429 and Retry-After."""
    context = {**(extra or {}), "form": form, "next": request.POST.get("next", ""),
               "refused": too_many_message(wait, what)}
    response = render(request, template, context, status=429)
    response["Retry-After"] = str(wait)
    return response


class LoginView(auth_views.LoginView):
    """Django's log-in page, throttled (ops/throttling.py: per account name and address, per
    address, per account name). Each attempt is counted before the password is checked and
    given back when it is right, so only failures spend and concurrent guesses cannot all slip
    past the budget."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        self.attempt = LoginAttempt(address=client_address(request), username=request.POST.get("username", ""))
        if self.attempt.wait:
            return _refused(request, self.template_name, self.form_class(request), wait=self.attempt.wait,
                            what="failed log-in attempts")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        self.attempt.succeeded()
        return super().form_valid(form)


def throttle_log_in(view, *, template: str, form_class, context=lambda request: {}):
    """A log-in view of someone else's (the admin's) with the same budgets as LoginView: any
    answer but the redirect of a success is a failure."""

    @wraps(view)
    def throttled(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        attempt = LoginAttempt(address=client_address(request), username=request.POST.get("username", ""))
        if attempt.wait:
            form = form_class(request)
            return _refused(request, template, form, wait=attempt.wait, what="failed log-in attempts",
                            extra=context(request))
        response = view(request, *args, **kwargs)
        if response.status_code == 302:
            attempt.succeeded()
        return response

    return throttled


def signup(request):
    if request.user.is_authenticated:
        return redirect("home")

    form = SignupForm(request.POST or None)
    if request.method == "POST":
        # Every attempt counts: each success is an account, the cheapest thing to abuse.
        wait = signup_take(address=client_address(request), username=request.POST.get("username", ""))
        if wait:
            return _refused(request, "registration/signup.html", SignupForm(), wait=wait, what="sign-ups")
        if form.is_valid():
            user = form.save()
            login(request, user)
            # The home page greets a new account once, with the way into the chat.
            request.session["welcome"] = True
            return redirect("home")

    return render(request, "registration/signup.html", {"form": form})
