"""The compose smoke sends one payout per test scenario: it must keep up with the scenario table."""

from decimal import Decimal

from contracts.domain.scenarios import REVIEW_THRESHOLD, SUFFIX_RULES
from tests.containers.compose_smoke import SCENARIOS


def test_the_smoke_covers_every_suffix_the_review_threshold_and_the_default() -> None:
    small = [scenario for scenario in SCENARIOS if Decimal(scenario.amount) < REVIEW_THRESHOLD]
    assert {scenario.account[-4:] for scenario in small} == {*SUFFIX_RULES, "9999"}
    assert "9999" not in SUFFIX_RULES  # the "anything else" row
    [review] = [scenario for scenario in SCENARIOS if scenario not in small]
    assert review.status == "IN_REVIEW"
