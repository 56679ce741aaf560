"""The count of open streams: a user at `USER_MAX_STREAMS` is refused (`429`, limit `streams`)
while others get in, the process at `MAX_STREAMS` refuses everybody (`503`), a closed slot
makes room once however often it is closed, and 0 is no limit; any sequence of opens and
closes keeps the count equal to the slots still open."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits import LimitExceeded
from gateway.streams import OpenStreams, StreamsFull, StreamSlot


def test_a_user_at_their_limit_is_refused_and_others_are_not() -> None:
    streams = OpenStreams(per_user=2, in_all=10)
    mine = [streams.take("alice"), streams.take("alice")]
    with pytest.raises(LimitExceeded) as refused:
        streams.take("alice")
    assert refused.value.limit == "streams"
    assert refused.value.retry_after_s >= 1
    streams.take("bob")
    assert (streams.of("alice"), streams.of("bob"), streams.open) == (2, 1, 3)

    mine[0].close()
    streams.take("alice")  # the closed one made room
    assert streams.of("alice") == 2


def test_a_full_process_refuses_everybody_but_names_a_users_own_limit_first() -> None:
    streams = OpenStreams(per_user=2, in_all=3)
    held = [streams.take("alice"), streams.take("alice"), streams.take("bob")]
    with pytest.raises(StreamsFull) as full:
        streams.take("carol")
    assert full.value.retry_after_s >= 1
    # Alice is at her own limit too: that is what she can do something about.
    with pytest.raises(LimitExceeded):
        streams.take("alice")
    held[2].close()
    streams.take("carol")
    assert streams.open == 3


def test_closing_twice_gives_back_one_slot_and_forgets_the_user() -> None:
    streams = OpenStreams(per_user=1)
    slot = streams.take("alice")
    other = streams.take("bob")
    slot.close()
    slot.close()
    assert (streams.open, streams.of("alice"), streams.of("bob")) == (1, 0, 1)
    assert "alice" not in streams._by_user
    other.close()
    assert streams.open == 0


def test_zero_is_no_limit_and_the_streams_are_still_counted() -> None:
    streams = OpenStreams(per_user=0, in_all=0)
    slots = [streams.take("alice") for _ in range(1000)]
    assert streams.open == streams.of("alice") == 1000
    for slot in slots:
        slot.close()
    assert streams.open == 0


# An operation: open a stream of user `n`, or close the `n`-th slot still open.
OPS = st.lists(st.tuples(st.sampled_from(["open", "close"]), st.integers(0, 4)), max_size=60)


@given(per_user=st.integers(0, 3), in_all=st.integers(0, 6), ops=OPS)
def test_the_count_is_the_slots_open_and_never_passes_a_limit(
    per_user: int, in_all: int, ops: list[tuple[str, int]]
) -> None:
    streams = OpenStreams(per_user=per_user, in_all=in_all)
    held: list[tuple[str, StreamSlot]] = []
    for op, n in ops:
        if op == "open":
            user = f"user-{n}"
            mine = sum(1 for u, _ in held if u == user)
            try:
                held.append((user, streams.take(user)))
            except LimitExceeded:
                assert per_user
                assert mine >= per_user
            except StreamsFull:
                assert in_all
                assert len(held) >= in_all
                assert not (per_user and mine >= per_user)
        elif held:
            _, slot = held.pop(n % len(held))
            slot.close()
        assert streams.open == len(held)
        assert not in_all or streams.open <= in_all
        for user in {u for u, _ in held}:
            count = sum(1 for u, _ in held if u == user)
            assert streams.of(user) == count
            assert not per_user or count <= per_user
