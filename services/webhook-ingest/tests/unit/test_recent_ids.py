"""The bounded memory of `started` events already stored."""

from webhook_ingest.recent_ids import RecentIds


def test_recent_ids_forget_the_oldest_first() -> None:
    ids = RecentIds(2)
    ids.add("a")
    ids.add("b")
    ids.add("a")  # used again: now the newest
    ids.add("c")
    assert "a" in ids
    assert "c" in ids
    assert "b" not in ids
    assert len(ids) == 2
