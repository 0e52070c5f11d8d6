"""Policy names are formatted into DDL, so only plain SQL identifiers are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.policy import PolicyError, load_policy

HEADER = "version: 1\nentities:\n"


def _policy(tmp_path: Path, entity: str, field: str, action: str = '"keep:text"') -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"{HEADER}  {entity}:\n    fields:\n      subject_system: subject\n"
        f"      subject_id: subject\n      {field}: {action}\n"
    )
    return path


@pytest.mark.parametrize(
    ("entity", "field", "action", "offending"),
    [
        ("contact", '"note; drop table x"', '"keep:text"', "note; drop table x"),
        ("contact", '"Note"', '"keep:text"', "Note"),
        ("contact", '"1st"', '"keep:text"', "1st"),
        ('"contact s"', "note", '"keep:text"', "contact s"),
        ("contact", "a" * 60, "tokenize", "a" * 60 + "_token"),  # a derived column too long
        ("contact", "a" * 52, "vault", "a" * 52 + "_key_version"),  # a vault column too long
    ],
)
def test_names_that_are_not_plain_identifiers_are_refused_naming_file_and_name(
    tmp_path: Path, entity: str, field: str, action: str, offending: str
):
    path = _policy(tmp_path, entity, field, action)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    assert repr(offending) in str(error.value)


def test_plain_identifiers_are_accepted(tmp_path: Path):
    policy = load_policy(_policy(tmp_path, "contact", "_note_2"))
    assert list(policy.entities["contact"].fields) == ["subject_system", "subject_id", "_note_2"]


def test_a_vault_field_may_not_take_the_name_of_another_ones_column(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"{HEADER}  contact:\n    fields:\n      subject_system: subject\n"
        "      subject_id: subject\n      email: vault\n      email_key_version: vault\n"
    )
    with pytest.raises(PolicyError, match="email_key_version"):
        load_policy(path)
