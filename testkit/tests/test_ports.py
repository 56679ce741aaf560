"""The test kit's listening ports: below the kernel's ephemeral range, never the same twice in a
row of picks, and a slice of their own for each pytest-xdist worker."""

from __future__ import annotations

import pytest

from jobs_testkit.servers import base


@pytest.fixture(autouse=True)
def _fresh_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_cursor", None)


def as_worker(monkeypatch: pytest.MonkeyPatch, worker: str, count: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))


def test_a_cluster_worth_of_ports_has_no_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    as_worker(monkeypatch, "gw1", 4)
    picked = [base.free_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)


def test_each_worker_picks_from_its_own_slice_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    floor = base._ephemeral_floor()
    assert floor is not None, "this machine says where its ephemeral range starts"
    slices = []
    for index in range(4):
        as_worker(monkeypatch, f"gw{index}", 4)
        monkeypatch.setattr(base, "_cursor", None)
        ports = base._listen_ports(floor)
        picked = {base.free_port() for _ in range(50)}
        assert all(p in ports for p in picked), (index, ports)
        assert max(picked) < floor
        slices.append(set(ports))
    for i, one in enumerate(slices):
        for other in slices[i + 1 :]:
            assert not one & other


def test_outside_xdist_the_whole_range_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    floor = base._ephemeral_floor()
    assert floor is not None
    assert base._listen_ports(floor) == range(10_000, floor)


def test_a_nonsense_worker_name_falls_back_to_the_whole_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_worker(monkeypatch, "gwx", 4)
    floor = base._ephemeral_floor()
    assert floor is not None
    assert base._listen_ports(floor) == range(10_000, floor)
