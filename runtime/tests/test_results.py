"""Large outputs round-trip through the results bucket of a real NATS server."""

from nats.aio.client import Client as NATS

from jobs_proto.stream import StreamSpec
from jobs_runtime.results import load_result, result_store, store_result


async def test_a_large_output_is_stored_aside_and_loaded_back(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    store = await result_store(js, jobs_stream_ready.name, max_age_s=600)
    output = "tide " * (3 * 1024 * 1024)  # 15 MiB: larger than any bus message
    ref = await store_result(store, "p-large", output)
    again = await store_result(store, "p-large", output)
    assert ref == again == "output/p-large"
    same_bucket = await result_store(js, jobs_stream_ready.name)
    assert await load_result(same_bucket, ref) == output
    await js.delete_object_store(f"{jobs_stream_ready.name}_RESULTS")
