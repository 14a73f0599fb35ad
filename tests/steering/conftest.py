import pytest

from tests.tiny_models import build_tiny


@pytest.fixture
def tiny_site(settings, tmp_path):
    """A tiny Llama saved to a directory and made the site's model (STEERLAB_MODEL), so that
    tasks and commands load it as they would any model; media go to a temporary folder."""
    loaded = build_tiny("llama")
    directory = tmp_path / "tiny-llama"
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    settings.STEERLAB_MODEL = str(directory)
    settings.STEERLAB_DEVICE = "cpu"
    settings.MEDIA_ROOT = tmp_path / "media"
    return directory
