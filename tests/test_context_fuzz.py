"""Fuzzing as a test: hostile pages never crash, hang or exceed the budget (`make fuzz` runs many more)."""

from _context_fuzz import Case, cases, check
from hypothesis import HealthCheck, given, settings

FUZZ_SETTINGS = settings(
    max_examples=2000,
    deadline=None,  # hangs are checked by the property itself
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@FUZZ_SETTINGS
@given(cases())
def test_hostile_pages_never_crash_hang_or_exceed_the_budget(case: Case):
    check(case)
