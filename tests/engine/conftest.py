"""Engine fixtures: a tiny model per core family, and the real embedded SmolLM2."""

import pytest

from steering.engine import LoadedModel, SteerableModel
from tests.tiny_models import CORE_FAMILIES, build_tiny


@pytest.fixture(params=CORE_FAMILIES)
def tiny(request) -> LoadedModel:
    return build_tiny(request.param)


@pytest.fixture(scope="session")
def smollm() -> SteerableModel:
    return SteerableModel.load()
