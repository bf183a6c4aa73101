"""The operator's process-level parts without a cluster: its knobs, leader election's rule, when
a job is reconciled on the clock, and its log lines."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from lifelong.api import AutoDLJobStatus
from lifelong.operator.config import ConfigError, OperatorConfig
from lifelong.operator.logs import JobLogger, JsonFormatter, PlainFormatter
from lifelong.operator.peering import Leadership, Peer, leader_among, peers
from lifelong.operator.reconcile import wake_time

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


# --- knobs -----------------------------------------------------------------------------------


def test_every_knob_comes_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LIFELONG_LOG_LEVEL": "debug", "LIFELONG_LOG_FORMAT": "JSON",
        "LIFELONG_HEALTH_PORT": "0", "LIFELONG_STAGE_METRICS_PORT": "9200",
        "LIFELONG_RESYNC_INTERVAL": "60", "LIFELONG_PEERING": "lifelong",
        "LIFELONG_PEERING_PRIORITY": "7", "LIFELONG_PEERING_LIFETIME": "15",
        "POD_ID": "operator-0", "POD_IP": "10.1.2.3",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    config = OperatorConfig.from_env()
    assert (config.log_level, config.log_format) == ("DEBUG", "json")
    assert (config.health_port, config.stage_metrics_port) == (0, 9200)
    assert config.resync_interval == 60.0
    assert (config.peering, config.peering_priority, config.peering_lifetime) == ("lifelong", 7, 15)
    assert (config.identity, config.bind_address) == ("operator-0", "10.1.2.3")


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("LIFELONG_LOG_FORMAT", "xml", "must be one of plain, json"),
        ("LIFELONG_HEALTH_PORT", "eighty", "must be a whole number"),
        ("LIFELONG_RECONCILE_INTERVAL", "0", "must be at least 0.1"),
        ("LIFELONG_PEERING_LIFETIME", "1", "must be at least 5"),
    ],
)
def test_a_bad_knob_is_refused_with_its_name_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=said) as error:
        OperatorConfig.from_env()
    assert f"${name}" in str(error.value) and repr(value) in str(error.value)


def test_replicas_without_a_set_priority_draw_different_ones() -> None:
    priorities = {OperatorConfig.from_env().peering_priority for _ in range(5)}
    assert len(priorities) == 5


# --- leader election -------------------------------------------------------------------------


def keepalive(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, Any]:
    seen = datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


def test_a_live_peer_of_higher_or_equal_priority_makes_a_replica_stand_by() -> None:
    me = Peer("a", 10, NOW + 30)
    assert leader_among("a", 10, [me, Peer("b", 5, NOW + 30)], NOW)
    assert not leader_among("a", 10, [me, Peer("b", 11, NOW + 30)], NOW)
    assert not leader_among("a", 10, [me, Peer("b", 10, NOW + 30)], NOW)


def test_a_peer_whose_keepalive_lapsed_counts_for_nothing() -> None:
    status = {"a": keepalive(10, 1), "b": keepalive(99, 61), "c": "garbage", "d": {"priority": 1}}
    found = peers(status)
    assert [p.identity for p in found] == ["a", "b"]
    assert leader_among("a", 10, found, NOW)


class Peerings:
    """The one API call Leadership makes, answered from a dict."""

    def __init__(self, objects: dict[str | None, dict[str, Any]]) -> None:
        self.objects = objects

    def get_peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.objects.get(namespace)


def test_a_namespaced_replica_leads_only_if_it_leads_in_every_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.time", lambda: NOW)
    config = OperatorConfig(
        peering="lifelong", namespaces=("a", "b"), identity="me", peering_priority=10
    )
    mine = {"status": {"me": keepalive(10, 1)}}
    contested = {"status": {"me": keepalive(10, 1), "other": keepalive(20, 1)}}
    agreed: Any = Peerings({"a": mine, "b": mine})  # a stand-in for the API's peering reads
    leads = Leadership(agreed, config).standing()
    assert leads.leads
    split: Any = Peerings({"a": mine, "b": contested})
    standing = Leadership(split, config).standing()
    assert not standing.leads and "other (priority 20)" in standing.why
    missing = Leadership(Peerings({"a": mine}), config).standing()  # type: ignore[arg-type]
    assert not missing.leads and "does not exist" in missing.why


def test_a_standalone_replica_always_leads() -> None:
    assert Leadership(Peerings({}), OperatorConfig()).standing().leads  # type: ignore[arg-type]


# --- the clock -------------------------------------------------------------------------------


def test_only_serving_jobs_and_retries_wait_on_the_clock() -> None:
    assert wake_time(AutoDLJobStatus(phase="Serving"), NOW, 10) == NOW + 10
    assert wake_time(AutoDLJobStatus(phase="Updating"), NOW, 10) == NOW + 10
    assert wake_time(AutoDLJobStatus(phase="Searching"), NOW, 10) is None
    retry = AutoDLJobStatus(phase="Searching", next_attempt_time="2027-01-15T08:00:00Z")
    assert wake_time(retry, NOW, 10) == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()


# --- logs ------------------------------------------------------------------------------------


def emit(formatter: logging.Formatter, **extra: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("lifelong.operator.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        JobLogger(logger, "ml", "digits", "u-1").info("Created the %s Job.", "search", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_json_line_carries_the_job_as_an_object_not_in_the_message() -> None:
    entry = json.loads(emit(JsonFormatter(), stage="search"))
    assert entry["message"] == "Created the search Job."
    assert entry["object"] == {
        "apiVersion": "lifelong.dev/v1alpha1", "kind": "AutoDLJob",
        "namespace": "ml", "name": "digits", "uid": "u-1",
    }  # fmt: skip
    assert (entry["level"], entry["logger"], entry["stage"]) == (
        "info", "lifelong.operator.test", "search")  # fmt: skip


def test_a_plain_line_names_the_job_in_brackets() -> None:
    assert "[ml/digits] Created the search Job." in emit(PlainFormatter())
