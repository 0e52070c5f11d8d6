"""Journey YAML: validated on load, errors name the file and the key, loops are impossible."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.consent import PURPOSES
from domain.journeys import Journey, JourneyError, graph_problems, load_journey, load_journeys
from services.journeys import REPO_JOURNEYS

CANARY = "jane.canary@example.org"


def write(folder: Path, name: str, body: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def journey(name: str = "sample", steps: list | None = None, **extra) -> dict:
    return {
        "name": name,
        "description": "test",
        "owner": "tests",
        "purpose": "treatment",
        "entry": {"segment": "flu_vaccine_due"},
        "steps": steps
        or [
            {"id": "hello", "send": {"message": "hello"}, "next": "decide"},
            {
                "id": "decide",
                "branch": [{"when": {"opened": "hello", "within_days": 2}, "next": "done"}],
                "otherwise": "nudge",
            },
            {"id": "nudge", "send": {"message": "hello-again"}, "next": "done"},
            {"id": "done", "update_attribute": {"name": "greeted", "value": "yes"}},
        ],
        **extra,
    }


def problems_of(path: Path) -> list[str]:
    with pytest.raises(JourneyError) as caught:
        load_journey(path)
    return caught.value.problems


def test_the_shipped_journeys_load_as_dags_with_three_and_two_messages():
    journeys = {j.name: j for j in load_journeys(REPO_JOURNEYS)}
    assert set(journeys) >= {"diabetes_education", "post_visit_feedback"}
    diabetes, survey = journeys["diabetes_education"], journeys["post_visit_feedback"]
    messages = {s.send.message for s in diabetes.steps if s.send}
    assert {"diabetes-welcome", "diabetes-meal-planning", "diabetes-book-hba1c"} <= messages
    branches = [s for s in diabetes.steps if s.branch]
    kinds = {case.when.kind for step in branches for case in step.branch or []}
    assert {"opened", "no_engagement", "clicked", "data_update"} <= kinds
    assert any(s.wait for s in survey.steps) and survey.entry.data_update == "visit_completed"
    assert [s.send.message for s in survey.steps if s.send] == [
        "post-visit-survey",
        "post-visit-survey-reminder",
    ]
    for loaded in journeys.values():
        order = [s.id for s in loaded.topological_order()]
        assert len(order) == len(loaded.steps)
        for step in loaded.steps:
            assert all(order.index(step.id) < order.index(t) for t in step.next_steps)


def test_a_loop_is_refused_naming_the_file_and_the_steps(tmp_path):
    body = journey()
    body["steps"][2]["next"] = "hello"  # nudge -> hello -> decide -> nudge
    problems = problems_of(write(tmp_path, "sample", body))
    assert any(p.startswith("sample.yaml: steps: loop") and "hello" in p for p in problems)


def test_a_step_leading_to_itself_is_refused(tmp_path):
    body = journey()
    body["steps"][3]["next"] = "done"
    assert any("steps[3] (done).next" in p for p in problems_of(write(tmp_path, "sample", body)))


def test_an_unknown_next_step_names_file_and_key(tmp_path):
    body = journey()
    body["steps"][0]["next"] = "decde"
    problems = problems_of(write(tmp_path, "sample", body))
    assert problems == ["sample.yaml: steps[0] (hello).next: no step named 'decde'"]


def test_unreachable_steps_and_branches_on_later_sends_are_refused(tmp_path):
    body = journey()
    body["steps"].append({"id": "orphan", "wait": {"days": 1}})
    body["steps"][1]["branch"].append({"when": {"clicked": "nudge"}, "next": "done"})
    problems = problems_of(write(tmp_path, "sample", body))
    assert any("steps[4] (orphan): unreachable" in p for p in problems)
    assert any(
        "steps[1] (decide).branch[1].when: 'nudge' does not run before" in p for p in problems
    )


def test_bad_values_name_the_key_but_never_echo_the_value(tmp_path):
    body = journey(purpose=CANARY)
    body["steps"][0]["send"] = {"message": "hello", "subject": CANARY}
    body["steps"][2]["wait"] = {"days": -3}
    problems = problems_of(write(tmp_path, "sample", body))
    text = "\n".join(problems)
    assert "sample.yaml: purpose:" in text
    assert "sample.yaml: steps[0] (hello).send.subject:" in text
    assert "sample.yaml: steps[2] (nudge)" in text
    assert CANARY not in text


def test_conditions_and_steps_need_exactly_one_kind(tmp_path):
    body = journey()
    body["steps"][1]["branch"][0]["when"] = {"opened": "hello", "attribute": "sex", "equals": "f"}
    body["steps"][3] = {"id": "done", "wait": {"days": 1}, "add_to_segment": "x"}
    problems = problems_of(write(tmp_path, "sample", body))
    assert any(
        "steps[1] (decide).branch[0].when: a condition needs exactly one" in p for p in problems
    )
    assert any("steps[3] (done): a step needs exactly one" in p for p in problems)


def test_unknown_attributes_and_a_name_unlike_the_file_are_refused(tmp_path):
    body = journey(name="other")
    body["steps"][1]["branch"][0]["when"] = {"attribute": "favourite_colour", "equals": "red"}
    problems = problems_of(write(tmp_path, "sample", body))
    assert problems[0] == "sample.yaml: name: 'other' must match the file name 'sample'"
    assert any("unknown attribute 'favourite_colour'" in p for p in problems)


def test_an_attribute_another_journey_sets_may_be_read(tmp_path):
    write(tmp_path, "sets_it", journey(name="sets_it"))  # its last step sets `greeted`
    reader = journey(name="reads_it")
    reader["steps"][1]["branch"][0]["when"] = {"attribute": "greeted", "equals": "yes"}
    reader["steps"][3]["update_attribute"] = {"name": "read_it", "value": "yes"}
    assert any(
        "unknown attribute 'greeted'" in p for p in problems_of(write(tmp_path, "reads_it", reader))
    )
    names = sorted(j.name for j in load_journeys(tmp_path))
    assert names == ["reads_it", "sets_it"]


def test_every_problem_in_a_folder_is_reported_at_once(tmp_path):
    bad = journey(name="bad_one")
    bad["steps"][0]["next"] = "nowhere"
    write(tmp_path, "bad_one", bad)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(JourneyError) as caught:
        load_journeys(tmp_path)
    assert any(p.startswith("bad_one.yaml:") for p in caught.value.problems)
    assert any(p.startswith("broken.yaml: line") for p in caught.value.problems)


def test_journey_purposes_are_the_consent_purposes():
    literal = Journey.model_fields["purpose"].annotation
    assert set(typing.get_args(literal)) == set(PURPOSES)


# --- property: any step graph loads if and only if it has no cycle --------------------------


@st.composite
def step_graphs(draw):
    """Steps s0..sN; each wait step leads to at most one other step (any index)."""
    size = draw(st.integers(min_value=1, max_value=8))
    targets = [draw(st.one_of(st.none(), st.integers(0, size - 1))) for _ in range(size)]
    return targets


def _journey_from(targets: list[int | None]) -> Journey:
    steps = []
    for index, target in enumerate(targets):
        step = {"id": f"s{index}", "wait": {"days": 1}}
        if target is not None:
            step["next"] = f"s{target}"
        steps.append(step)
    return Journey.model_validate(journey(steps=steps))


def _has_cycle(targets: list[int | None]) -> bool:
    for start in range(len(targets)):
        seen, current = set(), start
        while current is not None:
            if current in seen:
                return True
            seen.add(current)
            current = targets[current]
    return False


@settings(max_examples=200, deadline=None)
@given(step_graphs())
def test_a_step_graph_is_accepted_only_without_a_loop(targets):
    problems = graph_problems(_journey_from(targets))
    looped = any("loop" in p or "cannot lead to itself" in p for p in problems)
    assert looped == _has_cycle(targets)
    if not problems:
        loaded = _journey_from(targets)
        order = [s.id for s in loaded.topological_order()]
        assert sorted(order) == sorted(f"s{i}" for i in range(len(targets)))
        for index, target in enumerate(targets):
            if target is not None:
                assert order.index(f"s{index}") < order.index(f"s{target}")
