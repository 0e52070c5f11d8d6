"""Identity resolution on tokens, and the sync diff."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.identity import ANCHOR_PRIORITY, resolve
from domain.sync_diff import diff_membership, payload_hash
from domain.tokens import Tokenizer

TOKENIZER = Tokenizer(bytes(32))


def test_subjects_sharing_a_key_resolve_to_one_person_and_merges_apply():
    keys = [
        ("fhir-1", "mrn", "m1"),
        ("hl7-1", "mrn", "m1"),
        ("crm-1", "email", "e1"),
        ("fhir-1", "email", "e1"),
        ("crm-2", "email", "e2"),
    ]
    resolution = resolve(
        ["fhir-1", "hl7-1", "crm-1", "crm-2", "lonely"], keys, [("crm-2", "old-9")], TOKENIZER
    )
    person = resolution.person_of
    assert person["fhir-1"] == person["hl7-1"] == person["crm-1"]
    assert person["crm-2"] == person["old-9"] != person["fhir-1"]
    assert resolution.persons == 3
    assert resolution.merges_applied == 1


def test_person_tokens_are_stable_whatever_the_input_order():
    keys = [("a", "mrn", "m1"), ("b", "mrn", "m1"), ("c", "email", "e")]
    first = resolve(["a", "b", "c"], keys, [], TOKENIZER).person_of
    second = resolve(["c", "b", "a"], list(reversed(keys)), [], TOKENIZER).person_of
    assert first == second


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3", "s4", "s5", "s6"]),
            st.sampled_from(["mrn", "email", "name_dob"]),
            st.sampled_from(["k1", "k2", "k3", "k4"]),
        ),
        max_size=25,
    ),
    st.lists(st.tuples(st.sampled_from(["s1", "s2", "s7"]), st.sampled_from(["s3", "s8"]))),
)
def test_streaming_keys_in_key_order_resolves_exactly_as_any_order(keys, merges):
    """services.identity streams the keys sorted (keys_sorted=True) to keep memory flat."""
    subjects = ["s1", "s2", "s3", "s4", "s5", "s6"]
    unsorted = resolve(subjects, keys, merges, TOKENIZER)
    in_order = sorted(set(keys), key=lambda k: (k[1], k[2], k[0]))
    streamed = resolve(subjects, iter(in_order), merges, TOKENIZER, keys_sorted=True)
    assert streamed.person_of == unsorted.person_of
    assert streamed.merges_applied == unsorted.merges_applied
    assert sum(streamed.links_by_key_type.values()) == sum(unsorted.links_by_key_type.values())


def reference_resolve(subjects, keys, merges) -> tuple[dict[str, str], int]:
    """The rules in their plain form: subjects sharing a key, or merged, are one person,
    whose token comes from the group's best anchor (its smallest MRN key, else email key,
    else name+birth-date key, else the smallest subject token)."""
    unanchored = len(ANCHOR_PRIORITY)
    anchor = {s: (unanchored, s) for s in subjects}
    label = {s: s for s in subjects}  # subject -> its group's label

    def join(a: str, b: str) -> bool:
        old, new = label.setdefault(a, a), label.setdefault(b, b)
        for subject, group in label.items():
            if group == old:
                label[subject] = new
        return old != new

    for subject, key_type, key_hash in keys:
        anchor[subject] = min(
            anchor.get(subject, (unanchored, subject)), (ANCHOR_PRIORITY[key_type], key_hash)
        )
        label.setdefault(subject, subject)
    sharing: dict[tuple[str, str], list[str]] = {}
    for subject, key_type, key_hash in keys:
        sharing.setdefault((key_type, key_hash), []).append(subject)
    for members in sharing.values():
        for other in members[1:]:
            join(members[0], other)
    merged = 0
    for surviving, prior in merges:
        for subject in (surviving, prior):
            anchor.setdefault(subject, (unanchored, subject))
        merged += join(surviving, prior)
    best = {}
    for subject, group in label.items():
        best[group] = min(best.get(group, anchor[subject]), anchor[subject])
    return {s: TOKENIZER.token("person", best[g][1]) for s, g in label.items()}, merged


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3", "s4", "s5", "s6", "s7"]),
            st.sampled_from(["mrn", "email", "name_dob"]),
            st.sampled_from(["k1", "k2", "k3", "k4"]),
        ),
        max_size=30,
    ),
    st.lists(st.tuples(st.sampled_from(["s1", "s2", "s7", "s9"]), st.sampled_from(["s3", "s8"]))),
    st.booleans(),
)
def test_resolution_follows_the_plain_rules(keys, merges, keys_sorted):
    subjects = ["s1", "s2", "s3", "s4", "s5", "s6"]
    if keys_sorted:  # as services.identity reads them: by key, a key's subjects in any order
        keys = sorted(keys, key=lambda k: (k[1], k[2]))
    resolution = resolve(subjects, keys, merges, TOKENIZER, keys_sorted=keys_sorted)
    person_of, merged = reference_resolve(subjects, keys, merges)
    assert resolution.person_of == person_of
    assert resolution.merges_applied == merged
    assert resolution.persons == len(set(person_of.values()))


def test_diff_modes():
    wanted = {"a": "h1", "b": "h2-new", "c": "h3"}
    synced = {"b": "h2", "c": "h3", "gone": "h9"}
    mirror = diff_membership(wanted, synced, "mirror")
    assert (mirror.adds, mirror.updates, mirror.removes, mirror.unchanged) == (
        ["a"],
        ["b"],
        ["gone"],
        1,
    )
    assert diff_membership(wanted, synced, "upsert").removes == []
    append = diff_membership(wanted, synced, "append")
    assert append.updates == [] and append.adds == ["a"]
    assert diff_membership(wanted, wanted).adds == []


def test_payload_hash_ignores_key_order():
    assert payload_hash({"a": 1, "b": 2}) == payload_hash({"b": 2, "a": 1})
