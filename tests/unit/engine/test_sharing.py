"""The planner shares the records of ended stages with its input state: it must still
never modify that state. Random pipelines (loops, retries, forEach, failures) are run
through the simulator with ``plan`` and ``observe`` checked on every call: the input
state dumps the same before and after, and the result equals what a planner working on
a full private copy decides.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from stagecoach.engine import Plan, RunState, StartAttempt, Tokens, dump_state, observe, plan

from . import sim
from .test_properties import behaviour, pipelines


def _checked(real: Callable[..., Plan]) -> Callable[..., Plan]:
    def call(pipeline: Any, state: RunState, *args: Any, **kwargs: Any) -> Plan:
        before = dump_state(state, with_outputs=True)
        private = copy.deepcopy(state)
        result = real(pipeline, state, *args, **kwargs)
        assert dump_state(state, with_outputs=True) == before, "the input state changed"
        again = real(pipeline, private, *args, **kwargs)
        assert dump_state(result.state, with_outputs=True) == dump_state(
            again.state, with_outputs=True)
        assert result.actions == again.actions
        return result

    return call


def _billed(behave: sim.Behave) -> sim.Behave:
    """Every attempt reports tokens (a stale result's still count: a write to its stage)."""
    def call(a: StartAttempt, state: RunState) -> sim.Result:
        return dataclasses.replace(behave(a, state), tokens=Tokens(3, 1))

    return call


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines())
def test_plan_and_observe_never_modify_their_input(
        case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, cfg = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim, "plan", _checked(plan))
        mp.setattr(sim, "observe", _checked(observe))
        run = sim.simulate(sim.resolved(spec), _billed(behaviour(cfg)))
    assert run.state.terminal
