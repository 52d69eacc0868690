"""``crucible.parsers``: which decoded JSON can be neither stored nor answered, and where it is."""

import pytest

from crucible.parsers import MAX_JSON_DEPTH, field_of, json_problem


def nested(depth: int):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, None, True, "ok ☃"]}, {"big": 10**300}, nested(MAX_JSON_DEPTH), "", [], {}],
)
def test_ordinary_json_has_no_problem(value):
    assert json_problem(value) is None


def test_a_lone_surrogate_is_found_with_its_place():
    assert json_problem({"metadata": {"runs": [1, "\ud800"]}}) == (
        'metadata["runs"][1]',
        "contains a lone surrogate (such as \\ud800), which is not valid Unicode",
    )


def test_a_key_with_a_lone_surrogate_is_named_escaped():
    place, problem = json_problem({"metadata": {"\udfff": 1}})
    assert place == 'metadata["\\udfff"]'
    assert problem.startswith("has a key that contains a lone surrogate")


def test_infinity_is_out_of_range():
    place, problem = json_problem({"timeout_s": float("inf")})
    assert (place, problem) == ("timeout_s", "is a number out of range (at most about 1.8e308)")


def test_nul_is_refused_only_when_asked():
    assert json_problem({"a": "x\x00"}) is None
    assert json_problem({"a": "x\x00"}, where="metadata", forbid_nul=True)[0] == 'metadata["a"]'
    assert json_problem({"a\x00": 1}, where="metadata", forbid_nul=True)[1].startswith("has a key that must not")


def test_depth_is_bounded_without_recursion():
    place, problem = json_problem({"metadata": nested(5000)})
    assert problem == f"is nested deeper than {MAX_JSON_DEPTH} levels"
    assert place.startswith("metadata[0]") and len(place) <= 80


@pytest.mark.parametrize(
    ("place", "field"),
    [
        ("metadata", "metadata"),
        ('metadata["a"][0]', "metadata"),
        ('"\\ud800"', "non_field_errors"),
        ("", "non_field_errors"),
    ],
)
def test_the_field_of_a_place(place, field):
    assert field_of(place) == field
