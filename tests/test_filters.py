"""Metadata filters: dates must be real calendar days, in either DICOM or ISO spelling."""

from __future__ import annotations

import pytest

from radsearch.errors import RadsearchError
from radsearch.filters import Filters


@pytest.mark.parametrize("typed", ["2021-03-04", "20210304", " 2021-03-04 "])
def test_dates_in_either_spelling(typed: str) -> None:
    assert Filters(date_from=typed).date_from == "2021-03-04"


@pytest.mark.parametrize("typed", ["2020-13-45", "2021-02-29", "2021-00-10", "21-03-04", "yesterday", ""])
def test_a_date_that_is_no_day_is_refused_in_one_line(typed: str) -> None:
    with pytest.raises(RadsearchError) as error:
        Filters(date_to=typed)
    assert str(error.value) == f"invalid date {typed!r}: use YYYY-MM-DD"


def test_leap_day_is_a_day() -> None:
    assert Filters(date_from="20240229").date_from == "2024-02-29"
