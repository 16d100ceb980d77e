"""Provider slots: the limit holds and waiting pipelines take turns. No I/O."""

from __future__ import annotations

from stagecoach.operator.slots import ProviderSlots

P = ("ns", "llm")
A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


def test_limit_and_round_robin() -> None:
    slots = ProviderSlots()
    slots.load(P, [])
    assert slots.free_for(P, A, 1) == 1
    slots.take(P, "a-1")
    slots.update(P, A, waiting=2, started=1)
    assert slots.free_for(P, B, 1) == 0
    slots.update(P, B, waiting=1, started=0)
    slots.update(P, C, waiting=1, started=0)
    assert slots.waiting[P] == [A, B, C]
    woken = slots.release(P, "a-1")
    assert woken == [A, B, C]
    # A just freed the slot, but B and C waited longer... A is at the head only because
    # it queued first; after A takes a slot it goes to the back.
    assert slots.free_for(P, A, 1) == 1 and slots.free_for(P, B, 1) == 0
    slots.take(P, "a-2")
    slots.update(P, A, waiting=1, started=1)
    assert slots.waiting[P] == [B, C, A]
    slots.release(P, "a-2")
    assert slots.free_for(P, A, 1) == 0 and slots.free_for(P, B, 1) == 1
    assert slots.usage(P) == (0, 3)


def test_release_is_idempotent_and_forget_clears() -> None:
    slots = ProviderSlots()
    slots.load(P, ["x"])
    assert slots.release(P, "y") == []
    slots.update(P, A, waiting=1, started=0)
    assert slots.release(P, "x") == [A]
    assert slots.release(P, "x") == []
    slots.forget(A)
    assert slots.waiting[P] == [] and slots.usage(P) == (0, 0)


def test_requests_per_minute_window() -> None:
    from datetime import UTC, datetime, timedelta

    slots = ProviderSlots()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert slots.rate_free(P, 2, t0) == (2, None)
    slots.take(P, "j1", t0)
    slots.take(P, "j2", t0 + timedelta(seconds=10))
    assert slots.rate_free(P, 2, t0 + timedelta(seconds=20)) == (0, t0 + timedelta(minutes=1))
    assert slots.rate_free(P, 2, t0 + timedelta(seconds=61)) == (1, None)
