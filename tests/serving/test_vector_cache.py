"""The per-process vector cache: bounded by bytes, least recently used out first, and a set
dropped when it is deleted or recomputed."""

import pytest

from steering.models import VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors
from tests.tiny_models import NUM_LAYERS

pytestmark = pytest.mark.django_db(transaction=True)


def _set(name, seed):
    vectors = make_vectors(["formality"], model_id=runtime.site_model_id(), hidden=64, layers=NUM_LAYERS, seed=seed)
    return vector_sets.vector_set_register(vectors=vectors, name=name)


@pytest.fixture
def sets(tiny_site, settings):
    made = [_set(f"set {i}", i) for i in range(3)]
    one = runtime.site_vectors(made[0]).nbytes
    runtime.forget_vector_set(made[0].pk)
    settings.STEERLAB_VECTOR_CACHE_BYTES = 2 * one  # room for two sets
    yield made
    for vector_set in made:
        runtime.forget_vector_set(vector_set.pk)


def _cached(sets):
    loaded = set(runtime.loaded_vector_sets())
    return [vector_set.pk in loaded for vector_set in sets]


def test_it_keeps_at_most_its_bytes_and_evicts_the_least_recently_used(sets):
    first, second, third = sets
    runtime.site_vectors(first)
    runtime.site_vectors(second)
    runtime.site_vectors(first)  # now the second is the least recently used
    runtime.site_vectors(third)
    assert _cached(sets) == [True, False, True]
    again = runtime.site_vectors(second)  # read again from its file, evicting the first
    assert _cached(sets) == [False, True, True]
    assert again.dimensions == ["formality"]


def test_a_deleted_set_leaves_the_cache(sets):
    runtime.site_vectors(sets[0])
    sets[0].delete()
    assert runtime.loaded_vector_sets() == []


def test_a_recomputed_set_replaces_its_old_vectors(sets, tmp_path):
    vector_set = sets[0]
    old = runtime.site_vectors(vector_set)
    new_vectors = make_vectors(["formality"], model_id=runtime.site_model_id(), hidden=64, layers=NUM_LAYERS, seed=9)
    new_name = "vectors/recomputed.safetensors"
    new_vectors.save(vector_set.file.storage.path(new_name))
    VectorSet.objects.filter(pk=vector_set.pk).update(file=new_name)  # what a recomputation commits
    vector_set.refresh_from_db()
    fresh = runtime.site_vectors(vector_set)
    assert fresh is not old and not fresh.vectors["formality"].equal(old.vectors["formality"])
    cache = runtime._site().vectors
    assert [key for key in cache if key[0] == vector_set.pk] == [(vector_set.pk, new_name)]
