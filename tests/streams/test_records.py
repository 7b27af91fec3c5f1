"""Consumer errors in a batch: logged and skipped, except a fatal one, which ends the worker
(its supervisor restarts it with a consumer that rejoins)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from trade_engine.streams.records import by_partition, without_errors


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


def _batch(error: KafkaError) -> list[Message]:
    return cast(list[Message], [ErrorMessage(error)])


@pytest.mark.parametrize("read", [by_partition, without_errors])
def test_a_transient_consumer_error_is_skipped(read: Any) -> None:
    assert not read(_batch(KafkaError(KafkaError._TRANSPORT, "broker down")))


@pytest.mark.parametrize("read", [by_partition, without_errors])
@pytest.mark.parametrize("flagged", [True, False], ids=["fatal-flag", "as-polled"])
def test_a_fatal_consumer_error_ends_the_worker(read: Any, flagged: bool) -> None:
    # As polled (the full chaos run's coordinator-kill): code _FATAL, fatal() False,
    # printed KafkaError{code=_FATAL,val=-150,str="Fatal error: Broker: Static consumer
    # fenced by other consumer with same group.instance.id: ..."}.
    fenced = KafkaError(KafkaError._FATAL, "static consumer fenced", fatal=flagged)
    with pytest.raises(KafkaException) as raised:
        read(_batch(fenced))
    assert raised.value.args[0].code() == KafkaError._FATAL
