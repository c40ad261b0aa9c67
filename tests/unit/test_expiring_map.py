"""contracts.expiring_map: entries live exactly ttl_seconds, by the given clock."""

from contracts.expiring_map import ExpiringMap
from tests.support.clocks import ManualClock


def test_an_entry_lives_its_ttl_and_no_longer() -> None:
    clock = ManualClock(now=100.0)
    remembered: ExpiringMap[str, int] = ExpiringMap(2.0, clock)
    remembered.put("a", 1)
    clock.now += 1.9
    assert remembered.get("a") == 1
    clock.now += 0.1
    assert remembered.get("a") is None


def test_putting_again_restarts_the_entry_and_discard_drops_matches() -> None:
    clock = ManualClock(now=100.0)
    remembered: ExpiringMap[str, int] = ExpiringMap(2.0, clock)
    remembered.put("a", 1)
    remembered.put("b", 2)
    clock.now += 1.5
    remembered.put("a", 3)
    clock.now += 1.0
    assert (remembered.get("a"), remembered.get("b")) == (3, None)
    remembered.discard(lambda value: value == 3)
    assert remembered.get("a") is None


def test_nothing_is_kept_without_a_ttl() -> None:
    remembered: ExpiringMap[str, int] = ExpiringMap(0.0)
    remembered.put("a", 1)
    assert remembered.get("a") is None
