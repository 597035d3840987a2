"""Pool specs as users write them: the flag form, COMFYFLEET_POOLS (';' or JSON), config-file
objects; mistakes are one-line errors naming the pool and the key."""

from __future__ import annotations

import pytest

from comfyfleet.config import Settings
from comfyfleet.fleet.pools import PoolSpecError, parse_pool, parse_pools


def test_the_flag_form_keeps_values_with_spaces_colons_and_equals() -> None:
    spec = parse_pool("gpu=local:min=1,max=3,cooldown=2.5,command=python -m x --faults a=b:c")
    assert (spec.name, spec.provider, spec.min, spec.max, spec.cooldown) == (
        "gpu", "local", 1, 3, 2.5
    )  # fmt: skip
    assert spec.options == {"command": "python -m x --faults a=b:c"}
    assert (
        spec.describe() == "gpu=local:min=1,max=3,cooldown=2.5,command=python -m x --faults a=b:c"
    )


@pytest.mark.parametrize(
    "env",
    [
        "a=local:max=1,command=x;b=docker:max=2,image=i",
        '["a=local:max=1,command=x", {"name": "b", "provider": "docker", "max": 2, "image": "i"}]',
    ],
)
def test_the_environment_takes_semicolons_or_json(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYFLEET_POOLS", env)
    specs = parse_pools(Settings().pools)
    assert [(s.name, s.provider, s.max) for s in specs] == [("a", "local", 1), ("b", "docker", 2)]
    assert specs[1].options == {"image": "i"}


def test_desired_workers_follow_demand_within_bounds() -> None:
    spec = parse_pool("p=local:min=1,max=4,target=2")
    assert [spec.desired(n) for n in (0, 1, 2, 3, 8, 100)] == [1, 1, 1, 2, 4, 4]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "gpu",
            "pool spec 'gpu': expected NAME=PROVIDER[:key=value,...], e.g. gpu=local:min=0,max=2",
        ),
        ("gpu=local:max", "pool 'gpu': 'max' is not key=value"),
        ("gpu=local:target=0", "pool 'gpu': target must be > 0"),
        ('{"name": "gpu", "provider": "local", "max": "x"}', "pool 'gpu': max='x' is not an int"),
        ("g pu=local:max=1", "pool spec 'g pu=local:max=1': name must be letters, digits, - or _"),
        ("a=local:max=1;a=local:max=2", "two pools are named 'a'"),
    ],
)
def test_mistakes_are_one_line_errors(entry: str, message: str) -> None:
    with pytest.raises(PoolSpecError) as info:
        parse_pools(entry)
    assert info.value.message == message
