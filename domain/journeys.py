"""Journeys: multi-step workflows marketing ops write in YAML (journeys/*.yaml), validated here.

A journey names its entry (a consent-gated segment, or a data update such as a finished
visit), the purpose its messages go out under, and an ordered list of steps:

- `send`: push the person to the step's engine audience (the engine sends the message on
  first join); consent is re-checked for the journey's purpose at that moment.
- `wait`: hold the person for a duration.
- `update_attribute`: set a contact attribute to a literal value from this file.
- `add_to_segment` / `remove_from_segment`: maintain a static segment.
- `branch`: ordered cases, each a condition and the step to go to. Conditions: `opened` or
  `clicked` a send step (optionally `within_days`), `no_engagement` with a send step after
  `days`, `attribute` equals / in, `data_update` (a lab result, a booked appointment, a
  finished visit since the person entered). A person waits at a branch until a case holds or
  the branch's horizon (its longest `days`/`within_days`) has passed; then `otherwise`
  applies, or the person leaves the journey (`no_branch_matched`).

Journey-level `exit_when` conditions are checked before every step. A step without `next`
ends the journey (completed). Loading refuses loops (the step graph must be a DAG),
unknown or unreachable steps, conditions on steps that cannot have run yet, and unknown
attributes; every error names the file and the key. No I/O but reading the file; no Dagster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ID_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
MESSAGE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Vault fields a journey message may carry (minimum necessary; as dbt's
# var allowed_personalization_fields for segments).
PERSONALIZATION_FIELDS = ("given_name", "family_name")
# De-identified person attributes (marts.dim_persons) a condition may test.
PERSON_ATTRIBUTES = ("age_band", "sex", "state", "language", "coverage_type", "journey_stage")
DATA_UPDATES = ("lab_result", "appointment_booked", "visit_completed")
ENGINE_AUDIENCE_MAX = 64  # the engine API's audience id limit
EXIT_KINDS = ("opened", "clicked", "attribute", "data_update", "left_entry_segment")


class JourneyError(ValueError):
    """A journey file is invalid; each problem names the file and the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Strict):
    """One test on a person; exactly one of the kind keys is set."""

    opened: str | None = None
    clicked: str | None = None
    no_engagement: str | None = None
    days: int | None = Field(default=None, ge=1, le=365)
    within_days: int | None = Field(default=None, ge=1, le=365)
    attribute: str | None = None
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    data_update: Literal["lab_result", "appointment_booked", "visit_completed"] | None = None
    code_set: str | None = Field(default=None, pattern=ID_PATTERN)
    left_entry_segment: Literal[True] | None = None

    @property
    def kind(self) -> str:
        for name in ("opened", "clicked", "no_engagement", "attribute", "data_update"):
            if getattr(self, name) is not None:
                return name
        return "left_entry_segment"

    @property
    def send_step(self) -> str | None:
        return self.opened or self.clicked or self.no_engagement

    @property
    def horizon_days(self) -> int:
        return self.days or self.within_days or 0

    def describe(self) -> str:
        """A short PHI-free label (used as exit reason and branch outcome)."""
        if self.kind in ("opened", "clicked"):
            window = f" within {self.within_days}d" if self.within_days else ""
            return f"{self.kind}:{self.send_step}{window}"
        if self.kind == "no_engagement":
            return f"no_engagement:{self.no_engagement} {self.days}d"
        if self.kind == "attribute":
            return f"attribute:{self.attribute}"
        if self.kind == "data_update":
            return f"{self.data_update}:{self.code_set}" if self.code_set else self.data_update
        return "left_entry_segment"

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        kinds = [
            name
            for name in (
                "opened",
                "clicked",
                "no_engagement",
                "attribute",
                "data_update",
                "left_entry_segment",
            )
            if getattr(self, name) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a condition needs exactly one of opened, clicked, no_engagement, attribute,"
                f" data_update, left_entry_segment (found {', '.join(kinds) or 'none'})"
            )
        kind = kinds[0]
        if kind == "no_engagement" and self.days is None:
            raise ValueError("no_engagement needs days (how long to wait for an open or click)")
        if self.days is not None and kind != "no_engagement":
            raise ValueError("days belongs to no_engagement; use within_days for opened/clicked")
        if self.within_days is not None and kind not in ("opened", "clicked"):
            raise ValueError("within_days belongs to opened/clicked")
        if kind == "attribute" and (self.equals is None) == (self.in_ is None):
            raise ValueError("an attribute condition needs exactly one of equals, in")
        if kind != "attribute" and (self.equals is not None or self.in_ is not None):
            raise ValueError("equals/in belong to an attribute condition")
        if self.code_set is not None and self.data_update != "lab_result":
            raise ValueError("code_set belongs to data_update: lab_result")
        return self


class Send(_Strict):
    message: str = Field(pattern=MESSAGE_PATTERN)  # the engine-side template id


class Wait(_Strict):
    days: int = Field(default=0, ge=0, le=365)
    hours: int = Field(default=0, ge=0, le=24 * 365)

    @property
    def duration(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours)

    @model_validator(mode="after")
    def _positive(self) -> Wait:
        if self.days == 0 and self.hours == 0:
            raise ValueError("a wait needs days or hours")
        return self


class AttributeUpdate(_Strict):
    name: str = Field(pattern=ID_PATTERN)
    value: str = Field(min_length=1, max_length=64)


class Case(_Strict):
    when: Condition
    next: str


STEP_KINDS = (
    "send",
    "wait",
    "update_attribute",
    "add_to_segment",
    "remove_from_segment",
    "branch",
)


class Step(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    description: str | None = None
    send: Send | None = None
    wait: Wait | None = None
    update_attribute: AttributeUpdate | None = None
    add_to_segment: str | None = Field(default=None, pattern=ID_PATTERN)
    remove_from_segment: str | None = Field(default=None, pattern=ID_PATTERN)
    branch: list[Case] | None = Field(default=None, min_length=1)
    otherwise: str | None = None
    next: str | None = None

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    @property
    def next_steps(self) -> list[str]:
        """Every step this one can lead to, in case order."""
        if self.branch is not None:
            targets = [case.next for case in self.branch]
            if self.otherwise:
                targets.append(self.otherwise)
            return list(dict.fromkeys(targets))
        return [self.next] if self.next else []

    @property
    def horizon_days(self) -> int:
        """How long a branch waits for one of its cases before `otherwise` applies."""
        return max((case.when.horizon_days for case in self.branch or []), default=0)

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a step needs exactly one of {', '.join(STEP_KINDS)}"
                f" (found {', '.join(kinds) or 'none'})"
            )
        if kinds[0] == "branch" and self.next is not None:
            raise ValueError("a branch goes on through its cases and otherwise, not next")
        if kinds[0] != "branch" and self.otherwise is not None:
            raise ValueError("otherwise belongs to a branch")
        return self


class Entry(_Strict):
    """Who enters: members of a segment's audience, or people with a recent data update."""

    segment: str | None = None
    data_update: Literal["lab_result", "appointment_booked", "visit_completed"] | None = None
    code_set: str | None = Field(default=None, pattern=ID_PATTERN)
    within_days: int | None = Field(default=None, ge=1, le=365)

    @model_validator(mode="after")
    def _one_source(self) -> Entry:
        if (self.segment is None) == (self.data_update is None):
            raise ValueError("entry needs exactly one of segment, data_update")
        if self.data_update is not None and self.within_days is None:
            raise ValueError("a data_update entry needs within_days (how recent the update is)")
        if self.segment is not None and (self.within_days or self.code_set):
            raise ValueError("within_days/code_set belong to a data_update entry")
        if self.code_set is not None and self.data_update != "lab_result":
            raise ValueError("code_set belongs to data_update: lab_result")
        return self


class Journey(_Strict):
    name: str = Field(pattern=ID_PATTERN)
    description: str
    owner: str
    purpose: Literal["treatment", "marketing", "fundraising", "plan_benefits"]
    entry: Entry
    personalization_fields: list[Literal["given_name", "family_name"]] = []
    attributes: list[str] = []  # attributes other journeys set that this one reads
    exit_when: list[Condition] = []
    steps: list[Step] = Field(min_length=1)

    @property
    def start(self) -> Step:
        return self.steps[0]

    def step(self, step_id: str) -> Step:
        return self._by_id()[step_id]

    def _by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}

    def engine_audience(self, step_id: str) -> str:
        """The engine audience a send step pushes to (unique per journey and step)."""
        return f"j.{self.name}.{step_id}"

    def topological_order(self) -> list[Step]:
        """Steps so that every step comes after all steps that lead to it."""
        steps = self._by_id()
        incoming = {step_id: 0 for step_id in steps}
        for step in self.steps:
            for target in step.next_steps:
                incoming[target] += 1
        ready = [step.id for step in self.steps if incoming[step.id] == 0]
        order: list[Step] = []
        while ready:
            current = steps[ready.pop(0)]
            order.append(current)
            for target in current.next_steps:
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
        return order

    def definition_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json(by_alias=True).encode()).hexdigest()


# --- validating the step graph ------------------------------------------------------------


def graph_problems(journey: Journey, declared_attributes: Iterable[str] = ()) -> list[str]:
    """What is wrong with the step graph, as 'key: message' lines (empty: it is valid)."""
    problems: list[str] = []
    index = {step.id: i for i, step in enumerate(journey.steps)}
    if len(index) != len(journey.steps):
        seen: set[str] = set()
        for i, step in enumerate(journey.steps):
            if step.id in seen:
                problems.append(f"steps[{i}].id: duplicate step id {step.id!r}")
            seen.add(step.id)
        return problems
    for i, step in enumerate(journey.steps):
        key = f"steps[{i}] ({step.id})"
        for field, target in _targets(step):
            if target not in index:
                problems.append(f"{key}.{field}: no step named {target!r}")
            elif target == step.id:
                problems.append(f"{key}.{field}: a step cannot lead to itself (loop)")
        if step.send and len(journey.engine_audience(step.id)) > ENGINE_AUDIENCE_MAX:
            problems.append(f"{key}.id: journey and step names too long for an engine audience")
    if problems:
        return problems

    cycle = _find_cycle(journey)
    if cycle:
        problems.append(f"steps: loop {' -> '.join(cycle)} (a journey must not revisit a step)")
        return problems

    reachable = _reachable(journey, journey.start.id)
    for i, step in enumerate(journey.steps):
        if step.id not in reachable:
            problems.append(f"steps[{i}] ({step.id}): unreachable from the first step")

    attributes = set(PERSON_ATTRIBUTES) | set(journey.attributes) | set(declared_attributes)
    attributes |= {s.update_attribute.name for s in journey.steps if s.update_attribute}
    sends = {step.id for step in journey.steps if step.send}
    for i, step in enumerate(journey.steps):
        for c, case in enumerate(step.branch or []):
            key = f"steps[{i}] ({step.id}).branch[{c}].when"
            problems += _condition_problems(journey, case.when, key, attributes, sends)
            target = case.when.send_step
            if target in sends and step.id not in _reachable(journey, target):
                problems.append(f"{key}: {target!r} does not run before this branch")
    for c, condition in enumerate(journey.exit_when):
        key = f"exit_when[{c}]"
        if condition.kind not in EXIT_KINDS:
            problems.append(f"{key}: {condition.kind} cannot end a journey (use a branch)")
        if condition.left_entry_segment and journey.entry.segment is None:
            problems.append(f"{key}: left_entry_segment needs an entry segment")
        problems += _condition_problems(journey, condition, key, attributes, sends)
    return problems


def _targets(step: Step) -> list[tuple[str, str]]:
    targets = [(f"branch[{c}].next", case.next) for c, case in enumerate(step.branch or [])]
    if step.otherwise:
        targets.append(("otherwise", step.otherwise))
    if step.next:
        targets.append(("next", step.next))
    return targets


def _condition_problems(
    journey: Journey, condition: Condition, key: str, attributes: set[str], sends: set[str]
) -> list[str]:
    problems = []
    target = condition.send_step
    if target is not None and target not in sends:
        problems.append(f"{key}.{condition.kind}: {target!r} is not a send step of this journey")
    if condition.attribute is not None and condition.attribute not in attributes:
        problems.append(
            f"{key}.attribute: unknown attribute {condition.attribute!r}; set it in an"
            " update_attribute step, list it under attributes, or use one of"
            f" {', '.join(PERSON_ATTRIBUTES)}"
        )
    return problems


def _find_cycle(journey: Journey) -> list[str] | None:
    steps = {step.id: step for step in journey.steps}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(step_id: str) -> list[str] | None:
        state[step_id] = 1
        path.append(step_id)
        for target in steps[step_id].next_steps:
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[step_id] = 2
        return None

    for step in journey.steps:
        if step.id not in state and (found := visit(step.id)):
            return found
    return None


def _reachable(journey: Journey, start: str) -> set[str]:
    steps = {step.id: step for step in journey.steps}
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(steps[current].next_steps)
    return seen


# --- loading ------------------------------------------------------------------------------


def load_journey(path: Path, declared_attributes: Iterable[str] = ()) -> Journey:
    """Read and validate one journey file; JourneyError names the file and every bad key."""
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise JourneyError([f"{name}: {where}: not valid YAML"]) from None
    if not isinstance(raw, dict):
        raise JourneyError([f"{name}: (top): a journey file must be a mapping"])
    try:
        journey = Journey.model_validate(raw)
    except ValidationError as error:
        raise JourneyError(
            [f"{name}: {_key(err['loc'], raw)}: {_message(err)}" for err in error.errors()]
        ) from None
    problems = graph_problems(journey, declared_attributes)
    if journey.name != path.stem:
        problems.insert(0, f"name: {journey.name!r} must match the file name {path.stem!r}")
    if problems:
        raise JourneyError([f"{name}: {problem}" for problem in problems])
    return journey


def load_journeys(directory: Path, names: Iterable[str] = ()) -> list[Journey]:
    """Every journey in `directory` (*.yaml, *.yml), or the named ones; all errors at once.

    Attributes any journey sets count as declared for all of them (one journey may branch
    on what another recorded).
    """
    wanted = set(names)
    if not directory.is_dir():
        raise JourneyError([f"{directory}: no such journeys folder (set HUB_JOURNEYS_DIR)"])
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    declared = _attributes_set_anywhere(files)
    journeys, problems = [], []
    for path in files:
        if wanted and path.stem not in wanted:
            continue
        try:
            journeys.append(load_journey(path, declared))
        except JourneyError as error:
            problems += error.problems
    missing = wanted - {path.stem for path in files}
    problems += [f"{name}.yaml: no such journey in {directory}" for name in sorted(missing)]
    if problems:
        raise JourneyError(problems)
    return journeys


def _attributes_set_anywhere(files: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in files:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # reported when that file itself is loaded
        steps = raw.get("steps") if isinstance(raw, dict) else None
        for step in steps if isinstance(steps, list) else []:
            update = step.get("update_attribute") if isinstance(step, dict) else None
            if isinstance(update, dict) and isinstance(update.get("name"), str):
                names.add(update["name"])
    return names


def _key(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """('steps', 2, 'branch', 0, 'when') -> 'steps[2] (check_welcome).branch[0].when'."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    label += f" ({node['id']})"
            parts.append(label)
            continue
        if item in ("function-after", "function-before") or str(item).startswith("literal["):
            continue
        parts.append(("." if parts else "") + str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top)"


def _message(error: dict[str, Any]) -> str:
    # pydantic's message, never its `input` (a file could hold anything).
    message = str(error["msg"])
    return re.sub(r"^Value error, ", "", message)
