"""One token trying to exhaust the gateway with streams, against the gateway as a process over
real NATS and the real job-store: it is refused `429` at `USER_MAX_STREAMS` on both event
routes while another user still gets in, closing one of its streams lets its next one in, the
process refuses everybody `503` at `MAX_STREAMS`, and the open-streams gauge follows along."""

from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from jobs_testkit.processes import ServiceProcess
from jobs_testkit.waiting import eventually

from .test_gateway_limits_and_cache import PROBLEM, assert_too_many, gateway_with
from .test_gateway_processes import bearer, random_job_id
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

PER_USER = 3
IN_ALL = 5


def open_streams(admin_url: str) -> float:
    metrics = httpx.get(f"{admin_url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("gateway_event_streams_open "))
    return float(line.split()[1])


async def test_one_token_cannot_hold_more_than_its_streams_nor_the_process_more_than_its_cap(
    job_store: ServiceProcess, tmp_path: Path, gateway_env: dict[str, str]
) -> None:
    admin = f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}"
    with gateway_with(
        gateway_env,
        tmp_path / "gateway.log",
        USER_MAX_STREAMS=str(PER_USER),
        MAX_STREAMS=str(IN_ALL),
        # A departed client is noticed when its next keepalive is due.
        SSE_KEEPALIVE_S="0.2",
    ) as url:
        # The real job-store answers each `/api/events`' list of open jobs (none here).
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as api,
            AsyncExitStack() as held,
        ):

            async def open_stream(user: str, path: str = "/api/events") -> httpx.Response:
                return await held.enter_async_context(api.stream("GET", path, headers=bearer(user)))

            mine = [await open_stream("alice") for _ in range(PER_USER)]
            assert [r.status_code for r in mine] == [200] * PER_USER

            # The attack: more streams of the same token, on either event route.
            assert_too_many(await api.get("/api/events", headers=bearer("alice")))
            job_events = f"/api/jobs/{random_job_id()}/events"
            assert_too_many(await api.get(job_events, headers=bearer("alice")))
            # The token in the query (as `EventSource` sends it) is the same user.
            query = await api.get("/api/events", params={"access_token": bearer_token("alice")})
            assert_too_many(query)

            # Somebody else still gets in, up to the process's cap.
            assert (await open_stream("bob")).status_code == 200
            assert (await open_stream("carol")).status_code == 200
            assert open_streams(admin) == IN_ALL
            full = await api.get("/api/events", headers=bearer("dave"))
            assert full.status_code == 503, full.text
            assert full.headers["content-type"] == PROBLEM
            assert full.json()["type"] == "urn:ai-jobs:problem:streams-full"
            assert int(full.headers["retry-after"]) >= 1

            # Alice hangs up one stream: once the gateway has noticed, her next one gets in.
            await mine[0].aclose()

            def one_closed() -> bool:
                return open_streams(admin) == IN_ALL - 1

            await eventually(one_closed, what="the closed stream released")
            assert (await open_stream("alice")).status_code == 200
            assert_too_many(await api.get("/api/events", headers=bearer("alice")))

        def all_closed() -> bool:
            return open_streams(admin) == 0

        await eventually(all_closed, what="every stream released")


def bearer_token(user: str) -> str:
    return bearer(user)["Authorization"].removeprefix("Bearer ")
