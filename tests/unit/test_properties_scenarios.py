"""Properties of the scenario rules (contracts.domain.scenarios.decide) over every valid amount,
any account string and any attempt number: total, deterministic, and driven only by the amount
threshold, the last four characters of the account and the attempt."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from contracts.domain.scenarios import REVIEW_THRESHOLD, Outcome, decide
from tests.support.strategies import amounts, digit_strings

THRESHOLD_CENTS = int(REVIEW_THRESHOLD * 100)
SCENARIO_SUFFIXES = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")

review_amounts = amounts(min_cents=THRESHOLD_CENTS)
ordinary_amounts = amounts(max_cents=THRESHOLD_CENTS - 1)
any_amount = amounts()
attempts = st.integers(min_value=-5, max_value=1_000)
suffixes = st.sampled_from(SCENARIO_SUFFIXES) | digit_strings(4) | st.text(min_size=4, max_size=4)
# Arbitrary text, and account-shaped strings whose suffix is one of the scenario suffixes.
accounts = st.text() | st.builds(str.__add__, digit_strings(0, 20), suffixes)


@given(review_amounts, accounts, attempts)
def test_large_amounts_go_to_review_whatever_the_account(
    amount: Decimal, account: str, attempt: int
) -> None:
    assert decide(amount, account, attempt).outcome is Outcome.IN_REVIEW


@given(ordinary_amounts, ordinary_amounts, st.text(), st.text(), suffixes, attempts)
def test_below_review_only_the_suffix_and_attempt_matter(
    amount: Decimal,
    other_amount: Decimal,
    prefix: str,
    other_prefix: str,
    suffix: str,
    attempt: int,
) -> None:
    """Same last four characters and attempt -> same decision, whatever amount and prefix."""
    account, other_account = prefix + suffix, other_prefix + suffix
    assert decide(amount, account, attempt) == decide(other_amount, other_account, attempt)


@given(ordinary_amounts, digit_strings(0, 20), attempts)
def test_0002_retries_on_the_first_attempt_only(amount: Decimal, prefix: str, attempt: int) -> None:
    outcome = decide(amount, prefix + "0002", attempt).outcome
    assert outcome is (Outcome.RETRY if attempt == 1 else Outcome.SUCCESS)


@given(any_amount, accounts, attempts)
def test_only_0002_on_attempt_1_and_scripted_0009_ever_retry(
    amount: Decimal, account: str, attempt: int
) -> None:
    if decide(amount, account, attempt).outcome is Outcome.RETRY:
        assert amount < REVIEW_THRESHOLD
        assert (account[-4:], attempt) == ("0002", 1) or account[-4:] == "0009"


@given(ordinary_amounts, accounts, attempts)
def test_suffix_table_below_review(amount: Decimal, account: str, attempt: int) -> None:
    expected = {
        "0001": Outcome.SUCCESS,
        "0002": Outcome.RETRY if attempt == 1 else Outcome.SUCCESS,
        "0003": Outcome.FAILED,
        "0004": Outcome.PENDING_AT_PSP,
        "0005": Outcome.ON_HOLD,
        "0006": Outcome.SUCCESS,
        "0007": Outcome.SLOW_PSP,
        "0008": Outcome.PENDING_AT_PSP,
        "0009": Outcome.RETRY,
    }.get(account[-4:], Outcome.SUCCESS)
    assert decide(amount, account, attempt).outcome is expected


@given(any_amount, accounts, attempts)
def test_decide_is_total_and_deterministic(amount: Decimal, account: str, attempt: int) -> None:
    first = decide(amount, account, attempt)
    assert first == decide(Decimal(str(amount)), str(account), int(attempt))
    assert first.outcome in set(Outcome)
    # A failure always says why; no other outcome carries a failure code.
    assert (first.failure_code is not None) == (first.outcome is Outcome.FAILED)
