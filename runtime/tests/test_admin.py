import httpx
from prometheus_client import Counter

from jobs_runtime.admin import Readiness, admin_app
from jobs_runtime.http import HttpServer

PROBED = Counter("jobs_test_admin_probes", "Counted by the admin test")


async def test_health_readiness_and_metrics() -> None:
    readiness = Readiness()
    healthy = {"db": True}

    async def database() -> None:
        if not healthy["db"]:
            raise ConnectionError("postgres down")

    readiness.add("postgres", database)
    server = HttpServer(admin_app(readiness), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
            starting = await client.get("/readyz")
            assert starting.status_code == 503
            assert starting.json()["checks"] == {"startup": "starting", "postgres": "ok"}
            readiness.mark_started()
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"postgres": "ok"}

            healthy["db"] = False
            down = await client.get("/readyz")
            assert down.status_code == 503
            # What is down, never the exception's text (it may name hosts or credentials).
            assert down.json()["checks"] == {"postgres": "unavailable"}
            assert "postgres down" not in down.text
            assert (await client.get("/healthz")).status_code == 200

            healthy["db"] = True
            readiness.stopping = True
            assert (await client.get("/readyz")).status_code == 503

            PROBED.inc()
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "jobs_test_admin_probes_total 1.0" in metrics.text
    finally:
        await server.stop()
