"""bench convergence --breakdown: the phase arithmetic over push-log events and push rounds (pure logic)."""

from __future__ import annotations

import pytest

from meshbed.bench import phases_from

T0 = 1000.0


def _ev(ts: float, node: str, event: str, nonce: str, resources: tuple[str, ...] = ("backend",),
        type_: str = "EDS") -> dict[str, object]:
    return {"ts": ts, "node": node, "type": type_, "version": "v", "nonce": nonce, "event": event,
            "resources": list(resources)}


def test_phases_split_a_change_from_rounds_and_acks() -> None:
    events = [_ev(T0 + 0.010, "a", "sent", "1"), _ev(T0 + 0.011, "b", "sent", "2"),
              _ev(T0 + 0.011, "c", "sent", "9", resources=("other",)),  # another service: ignored
              _ev(T0 + 0.013, "a", "ack", "1"), _ev(T0 + 0.015, "b", "ack", "2"),
              _ev(T0 + 0.016, "b", "ack", "2")]  # a second ACK of the same node: the first counts
    rounds = [{"generation": 3, "consul_answer_at": T0 + 0.006, "notified_at": T0 + 0.007,
               "push_start": T0 + 0.008, "push_end": T0 + 0.012, "streams": 3, "responses": 3}]
    ph = phases_from(events, rounds, "backend", T0, seen_s=0.020)
    assert ph == pytest.approx({"consul": 0.006, "diff": 0.001, "queue": 0.001, "build": 0.004,
                                "to_first_sent": 0.010, "sent_to_ack": 0.005, "ack_to_seen": 0.005})


def test_without_rounds_only_the_push_log_phases() -> None:  # the Go control plane has no /debug/rounds
    events = [_ev(T0 + 0.004, "a", "sent", "1"), _ev(T0 + 0.006, "a", "ack", "1")]
    ph = phases_from(events, [], "backend", T0, seen_s=0.010)
    assert set(ph) == {"to_first_sent", "sent_to_ack", "ack_to_seen"}


def test_nothing_sent_means_no_breakdown_not_a_made_up_one() -> None:
    assert phases_from([_ev(T0 + 1, "a", "ack", "1")], [], "backend", T0, seen_s=0.01) == {}


def test_a_round_before_the_change_or_without_responses_is_not_used() -> None:
    events = [_ev(T0 + 0.004, "a", "sent", "1")]
    rounds = [{"consul_answer_at": T0 - 1, "notified_at": T0, "push_start": T0 + 0.001, "push_end": T0 + 0.002,
               "responses": 2},
              {"consul_answer_at": T0 + 0.001, "notified_at": T0 + 0.002, "push_start": T0 + 0.003,
               "push_end": T0 + 0.003, "responses": 0}]
    assert "consul" not in phases_from(events, rounds, "backend", T0, seen_s=0.01)
