"""Reference parsing, held to its exact answers (`make mutate` found these unasserted).

test_reference.py checks what parses and roughly why not; these pin the boundaries (the
255-character name, the 1,024-character pre-check), the exact refusal texts a user reads, and
the inputs where a looser split (`rsplit`, no maxsplit) would parse something else.
"""

from __future__ import annotations

import pytest

from webhook.errors import InvalidReference
from webhook.registry.reference import MAX_REFERENCE_LENGTH, Reference

D = "sha256:" + "a" * 64


def refusal(text: str) -> str:
    with pytest.raises(InvalidReference) as caught:
        Reference.parse(text)
    return caught.value.message


def name_of_length(n: int) -> str:
    """`localhost:5001/<repository>` whose `registry/repository` is exactly `n` characters."""
    host = "localhost:5001"
    room = n - len(host) - 1
    # components of 49 letters joined by `/` (each component must be short enough to be valid)
    parts: list[str] = []
    while room > 0:
        take = min(49, room)
        if room - take == 1:  # a lone `/` cannot end the name: make the last part longer
            take -= 1
        parts.append("a" * take)
        room -= take + 1
    return f"{host}/{'/'.join(parts)}"


@pytest.mark.parametrize("length", [254, 255])
def test_a_name_of_up_to_255_characters_parses(length: int) -> None:
    text = name_of_length(length)
    assert len(text) == length
    assert Reference.parse(text).name == text


@pytest.mark.parametrize("length", [256, 300])
def test_a_name_over_255_characters_is_refused_saying_so(length: int) -> None:
    text = name_of_length(length)
    assert len(text) == length
    assert refusal(text) == f"invalid reference {text!r}: name longer than 255 characters"


def test_a_string_at_the_length_limit_reaches_the_parser_which_says_what_is_wrong() -> None:
    text = "a" * MAX_REFERENCE_LENGTH  # no valid reference is this long, but it is not "over"
    assert refusal(text) == f"invalid reference {text!r}: name longer than 255 characters"


def test_a_string_over_the_length_limit_is_refused_by_its_first_60_characters() -> None:
    text = "b" * 30 + "c" * (MAX_REFERENCE_LENGTH + 1 - 30)
    assert refusal(text) == (
        f"invalid reference {text[:60]!r}…: {MAX_REFERENCE_LENGTH + 1} characters, over the "
        f"{MAX_REFERENCE_LENGTH} any valid image reference fits in"
    )


def test_an_empty_reference_says_exactly_that() -> None:
    assert refusal("   ") == "empty image reference"


@pytest.mark.parametrize(
    "text",
    [f"app@x@{D}", f"app@{D}@{D}", f"app@{D}@x"],
    ids=["two-ats-digest-last", "two-digests", "two-ats-digest-first"],
)
def test_everything_after_the_first_at_is_the_digest(text: str) -> None:
    digest = text.split("@", 1)[1]
    assert refusal(text) == f"invalid reference {text!r}: bad digest {digest!r}"


def test_a_colon_before_the_last_slash_is_not_a_tag() -> None:
    # `registry.io/a:b/c`: `a:b` is a (bad) repository component, `b/c` is not a tag.
    text = "registry.io/a:b/c"
    assert refusal(text) == f"invalid reference {text!r}: bad repository component 'a:b'"


def test_an_uppercase_component_gets_the_lowercase_hint_and_only_it() -> None:
    assert refusal("ghcr.io/Org/x") == (
        "invalid reference 'ghcr.io/Org/x': bad repository component 'Org' "
        "(repository names must be lowercase)"
    )
    assert refusal("ghcr.io/-org/x") == (
        "invalid reference 'ghcr.io/-org/x': bad repository component '-org'"
    )


def test_a_bad_registry_host_is_named_in_the_refusal() -> None:
    assert refusal("bad_host.io/app") == (
        "invalid reference 'bad_host.io/app': bad registry host 'bad_host.io'"
    )


def test_a_refusal_quotes_the_reference_as_written() -> None:
    assert refusal(" registry.io/a:b/c ") == (
        "invalid reference ' registry.io/a:b/c ': bad repository component 'a:b'"
    )
