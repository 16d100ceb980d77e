"""Graph build: order, cycles, unknown names, ancestors."""

from __future__ import annotations

from stagecoach.engine.dag import build


def test_topological_order_is_deterministic_and_stable() -> None:
    g, errs = build([("a", []), ("c", ["a"]), ("b", ["a"]), ("d", ["b", "c"])])
    assert not errs and g is not None
    assert g.order == ("a", "c", "b", "d")
    assert g.ancestors("d") == {"a", "b", "c"}
    assert g.descendants("a") == {"b", "c", "d"}
    assert g.critical_path({"a": 1, "b": 5, "c": 2, "d": 1}) == 7


def test_cycle_is_named() -> None:
    g, errs = build([("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", [])])
    assert g is None
    assert errs[0].reason.startswith("dependency cycle: ")
    assert set(errs[0].reason.split(": ")[1].split(" (")[0].split(" -> ")) == {"a", "b", "c"}


def test_unknown_self_and_duplicate_dependencies() -> None:
    _, errs = build([("a", ["a"]), ("b", ["zz", "a", "a"]), ("a", [])])
    reasons = [(e.stage_index, e.field, e.reason) for e in errs]
    assert (0, "dependsOn[0]", "a stage cannot depend on itself") in reasons
    assert (1, "dependsOn[0]", "unknown stage 'zz'") in reasons
    assert (1, "dependsOn[2]", "'a' is listed twice") in reasons
    assert any("duplicate stage name 'a'" in r for _, _, r in reasons)
