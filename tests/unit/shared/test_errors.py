"""What operators are told of an error carries no personal data."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.errors import describe


class Borrower(BaseModel):
    phone: int


@pytest.mark.parametrize(("error", "told"), [
    (ValueError("call +86 138 0000 0000 failed"), "ValueError: call <digits> failed"),
    (KeyError("wang.fang@example.org"), "KeyError: '<email>'"),
    (ValueError("account 6222-0000-1111 is closed"), "ValueError: account <digits> is closed"),
    (OSError("connect to 127.0.0.1:9092 failed"), "OSError: connect to 127.0.0.1:9092 failed"),
    (ValueError("loan L-42 has no case"), "ValueError: loan L-42 has no case"),
    (TimeoutError(), "TimeoutError"),
])
def test_digits_and_addresses_are_masked_and_the_rest_is_kept(error: BaseException,
                                                              told: str) -> None:
    assert describe(error) == told


def test_a_validation_error_names_the_field_never_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        Borrower.model_validate({"phone": "not 13800000000"})
    told = describe(caught.value)
    assert told.startswith("ValidationError: phone: ")
    assert "13800000000" not in told


def test_a_message_that_repeats_its_type_names_it_once() -> None:
    class KafkaConnectionError(Exception):
        def __str__(self) -> str:
            return "KafkaConnectionError: Unable to bootstrap"

    assert describe(KafkaConnectionError()) == "KafkaConnectionError: Unable to bootstrap"


def test_it_fits_in_a_header() -> None:
    assert len(describe(ValueError("x" * 5000))) == 300
