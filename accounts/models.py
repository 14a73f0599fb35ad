from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A SteerLab user: Django's user, as its own model.

    It adds nothing yet. It exists from the first migration because swapping the user model
    later means rewriting every foreign key to it; profiles, vector sets and conversations all
    point here.
    """
