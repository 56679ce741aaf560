"""The `ResultStore` contract, run against the fake the unit tests use and against
`ObjectStoreResults` on a real JetStream Object Store: an output that fits travels in its event
(no reference); a larger one is stored aside, and its reference reads it back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from nats.aio.client import Client as NATS

from ai_runner.adapters.results import ObjectStoreResults
from ai_runner.ports import ResultStore
from jobs_proto.stream import MAX_INLINE_OUTPUT_BYTES, StreamSpec
from jobs_runtime.results import load_result, result_store

from ..fakes import FakeResults


@dataclass
class Backend:
    results: ResultStore
    # The smallest output that no longer fits in an event, for this store's threshold.
    too_large: str
    load: Callable[[str], Awaitable[str]]


Open = Callable[[], Awaitable[Backend]]


@pytest.fixture(params=["fake", "object_store"])
def open_backend(request: pytest.FixtureRequest) -> Open:
    if request.param == "fake":
        fake = FakeResults(limit=5)

        async def from_fake(ref: str) -> str:
            return fake.stored[ref.removeprefix("results/")]

        async def open_fake() -> Backend:
            return Backend(fake, "x" * 6, from_fake)

        return open_fake
    nats_client: NATS = request.getfixturevalue("nats_client")
    stream: StreamSpec = request.getfixturevalue("jobs_stream_ready")

    async def open_store() -> Backend:
        store = await result_store(nats_client.jetstream(), stream.name)

        async def from_store(ref: str) -> str:
            return await load_result(store, ref)

        # Measured as JSON text: with its quotes, this is one byte over the threshold.
        too_large = "x" * (MAX_INLINE_OUTPUT_BYTES - 1)
        return Backend(ObjectStoreResults(store), too_large, from_store)

    return open_store


async def test_an_output_that_fits_travels_in_its_event(open_backend: Open) -> None:
    backend = await open_backend()
    assert await backend.results.aside("p-small", "fits") is None


async def test_a_larger_output_is_stored_aside_and_read_back_by_its_reference(
    open_backend: Open,
) -> None:
    backend = await open_backend()
    ref = await backend.results.aside("p-large", backend.too_large)
    assert ref is not None
    assert await backend.load(ref) == backend.too_large
    # A retried completion stores the same prediction's output under the same reference.
    assert await backend.results.aside("p-large", backend.too_large) == ref
