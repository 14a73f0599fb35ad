# The API suite's fixtures: clients, and a ready shared vector set in a throwaway MEDIA_ROOT.
from tests.api.conftest import _media, as_alice, dimensions, shared_set  # noqa: F401
