"""Batches padded to a power of two, so that a statement built per number of rows has few sizes."""

from webhook_service.delivery_records import padded

FILLER = {"id": None}


def test_a_batch_is_padded_to_the_next_power_of_two_with_the_filler_after_its_rows() -> None:
    rows = [{"id": str(number)} for number in range(5)]
    assert padded(rows, FILLER) == [*rows, FILLER, FILLER, FILLER]


def test_a_batch_of_a_power_of_two_is_not_padded() -> None:
    for size in (1, 2, 4, 128):
        rows = [{"id": str(number)} for number in range(size)]
        assert padded(rows, FILLER) == rows


def test_sizes_up_to_128_take_eight_shapes() -> None:
    sizes = {len(padded([{"id": "x"}] * size, FILLER)) for size in range(1, 129)}
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 128}
