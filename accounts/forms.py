from django.contrib.auth.forms import UserCreationForm

from accounts.models import User


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        # UserCreationForm is bound to django.contrib.auth's User, not the custom one.
        model = User
        fields = ("username", "email")
