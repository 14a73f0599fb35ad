from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin

from accounts.models import User
from accounts.views import throttle_log_in

admin.site.register(User, UserAdmin)

# The admin's log-in page is a second door for password guessing: the same budget as the
# site's (set here, before urls.py reads admin.site.urls, which wraps admin.site.login).
admin.site.login = throttle_log_in(
    admin.site.login, template="admin/login.html", form_class=AdminAuthenticationForm,
    context=lambda request: {**admin.site.each_context(request), "title": "Log in"},
)
