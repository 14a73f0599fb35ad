"""Token authentication that refuses malformed keys before they reach the database."""

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class StrictTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, except that a key which no token can have (keys are 40
    hexadecimal characters) is refused as invalid without a query. PostgreSQL raises on a NUL
    character in a parameter, which made such a header a 500 instead of a 401."""

    def authenticate_credentials(self, key):
        if len(key) != 40 or not key.isascii() or not key.isalnum():
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
