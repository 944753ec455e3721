"""Anthropic's model-list paging (protocols/anthropic/models.py): walked forward by
``after_id`` or backward by ``before_id``, every model comes once, in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.core.errors import InvalidRequest
from antigv.core.models import ListedModel
from antigv.protocols.anthropic.models import MAX_LIMIT, model_object, model_page

ids = st.lists(st.text("abcdefgh-.0123456789", min_size=1, max_size=12), unique=True, max_size=40).map(sorted)


def listed(names: list[str]) -> list[ListedModel]:
    return [ListedModel(name, name.upper(), 1_700_000_000) for name in names]


@given(names=ids, limit=st.integers(min_value=1, max_value=12))
def test_forward_by_after_id_visits_every_model_once(names: list[str], limit: int) -> None:
    models, seen, query = listed(names), [], {"limit": str(limit)}
    while True:
        page = model_page(models, query)
        got = [entry["id"] for entry in page["data"]]
        assert len(got) <= limit and (page["first_id"], page["last_id"]) == (
            (got[0], got[-1]) if got else (None, None)
        )
        seen += got
        if not page["has_more"]:
            break
        query = {"limit": str(limit), "after_id": page["last_id"]}
    assert seen == names


@given(names=ids.filter(bool), limit=st.integers(min_value=1, max_value=12))
def test_backward_by_before_id_visits_every_earlier_model_once(names: list[str], limit: int) -> None:
    models, seen = listed(names), []
    query = {"limit": str(limit), "before_id": names[-1]}
    while True:
        page = model_page(models, query)
        seen = [entry["id"] for entry in page["data"]] + seen
        if not page["has_more"]:
            break
        query = {"limit": str(limit), "before_id": page["first_id"]}
    assert seen == names[:-1]


def test_an_entry_in_anthropic_s_shape() -> None:
    model = ListedModel(
        "claude-x", "Claude X", 1_700_000_000, max_input_tokens=200000, max_output_tokens=64000
    )
    assert model_object(model) == {
        "type": "model",
        "id": "claude-x",
        "display_name": "Claude X",
        "created_at": "2023-11-14T22:13:20Z",
        "max_input_tokens": 200000,
        "max_tokens": 64000,
    }
    assert "max_tokens" not in model_object(ListedModel("m", "M", 0))


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after_id": "zz"}, "after_id"),
        ({"before_id": "zz"}, "before_id"),
        ({"after_id": "a", "before_id": "b"}, "before_id"),
    ],
)
def test_bad_paging_names_its_parameter(query: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        model_page(listed(["a", "b"]), query)
    assert caught.value.param == param
