"""The ids merchants see of shared counters (contracts.public_ids): a keyed permutation of
[1, 2^52) that maps back, so a public id is a cursor."""

import itertools
import random

import pytest

from contracts.public_ids import ID_LIMIT, PublicIds

IDS = PublicIds(b"k" * 32)


@pytest.mark.parametrize("internal", [1, 2, 3, 1000, 2**31, ID_LIMIT - 1])
def test_a_public_id_maps_back_to_its_row(internal: int) -> None:
    public = IDS.public(internal)
    assert 0 < public < ID_LIMIT
    assert IDS.internal(public) == internal


def test_consecutive_rows_get_unrelated_ids() -> None:
    """The gap between two ids of a merchant says nothing of the rows in between."""
    publics = [IDS.public(internal) for internal in range(1, 1001)]
    assert len(set(publics)) == 1000
    gaps = {later - earlier for earlier, later in itertools.pairwise(publics)}
    assert len(gaps) > 990


def test_the_row_the_permutation_sends_to_0_walks_on() -> None:
    """0 is no id (cursors are at least 1): the row that would get it gets the next one."""
    sent_to_0 = IDS._backward(0)
    public = IDS.public(sent_to_0)
    assert public == IDS._forward(0) != 0
    assert IDS.internal(public) == sent_to_0


def test_another_key_gives_other_ids() -> None:
    assert PublicIds(b"x" * 32).public(7) != IDS.public(7)


@pytest.mark.parametrize("public", [0, -1, ID_LIMIT, 2**63])
def test_a_number_out_of_range_names_no_row(public: int) -> None:
    assert IDS.internal(public) is None


def test_random_rows_round_trip() -> None:
    chosen = random.Random(5).sample(range(1, ID_LIMIT), 2000)
    assert all(IDS.internal(IDS.public(internal)) == internal for internal in chosen)
