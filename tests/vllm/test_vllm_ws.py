"""The websocket chat protocol's own tests, served by vLLM (STEERLAB_ENGINE=vllm), in local mode
and in worker mode (an inference worker fed through Redis, TEST_REDIS_URL): the same frames,
logging, cancellation and freeing of a closed socket's generation as with the builtin engine."""

import pytest

from tests.vllm.conftest import SKIP_REASON

pytest.importorskip("vllm", reason=SKIP_REASON)

from tests.ws.conftest import formality_vectors, inference_mode, steerable  # noqa: E402,F401
from tests.ws.test_chat_protocol import (  # noqa: E402,F401
    test_a_closed_socket_frees_its_generation,
    test_cancel_stops_the_answer_and_logs_it_cancelled,
    test_it_streams_start_tokens_done_and_logs_the_turn,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _on_vllm(vllm_scheduler):
    """Every test here runs with the site's scheduler being vLLM's."""
    yield
    assert vllm_scheduler.table.free_rows == vllm_scheduler.table.rows, "a steering row was left taken"
