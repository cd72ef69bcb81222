"""The worker's in-flight bound: refuses at once past it, in the caller's shape, with retry-after."""

from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.providers.shedding import Admission, AdmissionConfig, client_host


def test_refuses_past_the_bound_and_admits_again_after_a_leave() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=3))
    assert [adm.try_enter() for _ in range(5)] == [True, True, True, False, False]
    assert adm.in_flight == 3 and adm.refused == 2
    adm.leave()
    assert adm.try_enter()
    assert not adm.try_enter()
    assert adm.peak == 3 and adm.refused == 3


def test_a_refusal_takes_no_slot() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=1))
    assert adm.try_enter()
    for _ in range(100):
        assert not adm.try_enter()
    adm.leave()
    assert adm.in_flight == 0 and adm.try_enter()


def test_zero_means_no_bound() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=0))
    assert all(adm.try_enter() for _ in range(10_000))
    assert adm.refused == 0 and adm.in_flight == 10_000


def test_default_bound() -> None:
    adm = Admission()
    assert adm.limit == 1024
    assert sum(adm.try_enter() for _ in range(1100)) == 1024


def test_unbalanced_leave_is_a_bug_not_a_negative_count() -> None:
    adm = Admission()
    with pytest.raises(RuntimeError):
        adm.leave()
    with pytest.raises(ValueError):
        Admission(AdmissionConfig(max_in_flight=-1))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_refusal_is_a_503_in_the_callers_shape_with_retry_after(protocol: errors.Protocol) -> None:
    adm = Admission(AdmissionConfig(max_in_flight=1, retry_after_s=2))
    err = adm.refusal()
    assert isinstance(err, errors.ServiceUnavailable)
    assert err.headers == {"retry-after": "2"}
    status, body = errors.render(err, protocol)
    data = json.loads(body)
    assert status == 503
    if protocol == "openai":
        assert data["error"]["code"] == "overloaded" and data["error"]["type"] == "service_unavailable"
    else:
        assert data == {"type": "error", "error": {"type": "overloaded_error", "message": err.message}}


def test_per_client_bound_refuses_one_client_not_the_others() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=100, max_per_client=2))
    assert [adm.try_enter("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert adm.try_enter("10.0.0.2") and adm.refused_client == 1 and adm.refused == 0
    adm.leave("10.0.0.1")
    assert adm.try_enter("10.0.0.1")
    for _ in range(2):
        adm.leave("10.0.0.1")
    adm.leave("10.0.0.2")
    assert adm.in_flight == 0 and adm.clients() == 0  # nothing kept for clients that left


def test_per_client_refusal_takes_no_worker_slot() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=2, max_per_client=1))
    assert adm.try_enter("a") and not adm.try_enter("a")
    assert adm.try_enter("b") and not adm.try_enter("c")  # now the worker is full
    assert adm.in_flight == 2 and adm.refused == 1 and adm.refused_client == 1


def test_many_clients_keep_the_table_small() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=0, max_per_client=1))
    for i in range(10_000):
        assert adm.try_enter(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        adm.leave(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert adm.clients() == 0


@pytest.mark.parametrize(("client", "host"), [
    ("10.0.0.7:51234", "10.0.0.7"), ("[::1]:51234", "::1"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("10.0.0.7", "10.0.0.7"), ("::1", "::1"), ("unix", "unix"),
])
def test_client_host(client: str, host: str) -> None:
    assert client_host(client) == host
