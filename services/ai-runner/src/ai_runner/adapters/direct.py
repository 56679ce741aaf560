"""The ai-runner's KV buckets with direct gets: `allow_direct` on a bucket's stream makes a read
one request answered with the raw entry (`$JS.API.DIRECT.GET`), where `KeyValue.get` otherwise
makes a JetStream API call answered with the entry as base64 inside JSON."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue


async def direct_key_value(
    js: JetStreamContext, name: str, *, ttl_s: float | None = None, replicas: int = 1
) -> KeyValue:
    """The bucket, created with direct gets allowed by the first replica that needs it (the
    same configuration from several at once is accepted); one value per key, `ttl_s` None:
    kept forever. As `jobs_runtime.bus.ensure_key_value`, plus `direct`.

    A bucket made before without them keeps API gets (`KeyValue` asks its stream which
    to use): the runner's NATS user may create the stream, not update it.

    On an R3 stream any replica may answer a direct get, a lagging one too. Every claim and
    limit is written by compare-and-set and a claim's facts only ever accumulate, so an old
    read can make a write conflict (and be read again) or a decision wait, never win a race.
    """
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        pass
    return await js.create_key_value(
        js_api.KeyValueConfig(
            bucket=name,
            history=1,
            ttl=ttl_s,
            replicas=replicas,
            storage=js_api.StorageType.FILE,
            direct=True,
        )
    )
