"""The name -> part registry: lookups, close matches, patterns, no double registration."""

from __future__ import annotations

import pytest

from pipeline.metrics import METRICS
from pipeline.registry import Registry


def _widgets() -> Registry[object]:
    reg: Registry[object] = Registry("widget")
    reg.add("resnet18", object(), "a small one")
    reg.add("resnet50", object(), "a bigger one")
    reg.add("vit_base", object(), "a transformer")
    return reg


def test_get_returns_registered_object() -> None:
    reg: Registry[object] = Registry("widget")
    part = object()
    reg.add("thing", part, "desc")
    assert reg.get("thing") is part
    entry = reg.entry("thing")
    assert entry.name == "thing" and entry.obj is part and entry.description == "desc"


def test_register_decorator_returns_object_and_uses_docstring() -> None:
    reg: Registry[object] = Registry("loss")

    @reg.register("l1")
    def l1(a: float, b: float) -> float:
        """Absolute difference.

        More text.
        """
        return abs(a - b)

    assert l1(3, 1) == 2  # the decorator hands the function back
    assert reg.get("l1") is l1
    assert reg.entry("l1").description == "Absolute difference."


def test_unknown_name_lists_close_matches_and_known_names() -> None:
    reg = _widgets()
    with pytest.raises(KeyError) as info:
        reg.get("resnet19")
    msg = info.value.args[0]
    assert "Unknown widget 'resnet19'" in msg
    assert "Did you mean 'resnet18', 'resnet50'?" in msg
    assert msg.endswith("Known: resnet18, resnet50, vit_base.")


def test_unknown_name_without_close_match_still_lists_known() -> None:
    reg = _widgets()
    with pytest.raises(KeyError) as info:
        reg.entry("zzz")
    msg = info.value.args[0]
    assert "Did you mean" not in msg
    assert "Known: resnet18, resnet50, vit_base." in msg
    assert reg.unknown_message("zzz") == msg


def test_list_with_pattern() -> None:
    reg = _widgets()
    assert reg.list() == ["resnet18", "resnet50", "vit_base"]
    assert reg.list("resnet*") == ["resnet18", "resnet50"]
    assert reg.list("*base") == ["vit_base"]
    assert reg.list("res?et5*") == ["resnet50"]
    assert reg.list("nothing*") == []


def test_double_registration_refused() -> None:
    reg = _widgets()
    first = reg.get("resnet18")
    with pytest.raises(ValueError, match="widget 'resnet18' is already registered"):
        reg.add("resnet18", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("resnet18")(object())
    assert reg.get("resnet18") is first


def test_contains_and_sorted_iteration() -> None:
    reg: Registry[int] = Registry("number")
    for name in ("c", "a", "b"):
        reg.add(name, ord(name))
    assert list(reg) == ["a", "b", "c"]
    assert "a" in reg and "d" not in reg and 3 not in reg


def test_metric_registry_patterns() -> None:
    assert METRICS.list("f1*") == ["f1", "f1_macro", "f1_micro", "f1_samples",
                                   "f1_weighted"]
    assert set(METRICS.list("*mse")) == {"mse", "rmse", "mcrmse"}
    with pytest.raises(KeyError, match="Did you mean 'roc_auc'"):
        METRICS.get("roc_acu")
