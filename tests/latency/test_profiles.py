"""Hardware profiles: validation, the space's target section, names, keys, device names."""

from __future__ import annotations

import pytest

from rs_search.errors import RsSearchError, SpecError
from rs_search.latency.profiles import (
    BUILTIN_PROFILES,
    HardwareProfile,
    UnknownProfileError,
    cpu_model,
    device_name,
    get_profile,
)


def test_builtin_profiles_round_trip_and_have_distinct_keys() -> None:
    for name, profile in BUILTIN_PROFILES.items():
        assert profile.name == name
        assert HardwareProfile.from_dict(profile.to_dict()) == profile
    assert len({p.key() for p in BUILTIN_PROFILES.values()}) == len(BUILTIN_PROFILES)
    assert {"cpu-fp32-b1", "cpu-fp32-b16", "cuda-bf16-b128", "cuda-fp16-b1"} <= set(
        BUILTIN_PROFILES
    )


def test_key_hashes_settings_not_name_nor_device_index() -> None:
    a = HardwareProfile(name="a", device="cuda:0", batch_size=8, dtype="fp16")
    b = HardwareProfile(name="b", device="cuda:1", batch_size=8, dtype="fp16")
    assert (
        a.key()
        == b.key()
        == HardwareProfile(name="c", device="cuda", batch_size=8, dtype="fp16").key()
    )
    assert a.key() != HardwareProfile(name="a", device="cuda:0", batch_size=8, dtype="bf16").key()
    assert a.key() != HardwareProfile(name="a", device="cpu", batch_size=8, dtype="fp16").key()
    # pinned: cache rows written by another process or release must keep matching
    assert HardwareProfile(name="x").key() == "f901f19818d36d36"
    # a training step is another figure; the hardware's name is a row's, not the key's
    step = HardwareProfile(name="x", mode="train_step")
    assert step.key() != HardwareProfile(name="x").key()
    assert HardwareProfile(name="x", device_name="NVIDIA H200").key() == "f901f19818d36d36"


def test_from_space_target_section() -> None:
    from rs_search.space import parse_space

    space = parse_space(
        {
            "architecture": {"depth": [[1, 1, 1, 1]], "width": 0.25, "resolution": 32},
            "recipe": {},
            "objectives": {"accuracy": "maximize", "latency": "minimize"},
            "target": {
                "name": "edge",
                "mode": "train_step",
                "device": "cpu",
                "batch_size": 4,
                "threads": 2,
                "channels_last": False,
                "device_name": "AMD EPYC (2 CPUs)",
            },
        }
    )
    profile = HardwareProfile.from_dict(space.target.to_dict())
    assert (profile.name, profile.batch_size, profile.threads, profile.channels_last) == (
        "edge",
        4,
        2,
        False,
    )
    assert profile.mode == "train_step" and profile.device_name == "AMD EPYC (2 CPUs)"
    assert "training step at batch 4 (halved until it fits)" in profile.describe()
    assert HardwareProfile.from_dict(space.target) == profile  # the TargetSpec itself works too


def test_a_bare_builtin_name_means_the_builtin() -> None:
    assert HardwareProfile.from_dict({"name": "cpu-fp32-b16"}) == BUILTIN_PROFILES["cpu-fp32-b16"]
    tweaked = HardwareProfile.from_dict({"name": "cpu-fp32-b16", "threads": 1})
    assert tweaked.batch_size == 16 and tweaked.threads == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "batch": 4}, "target.batch: unknown key"),
        ({"name": "x", "batch_size": 0}, "target.batch_size"),
        ({"name": "x", "batch_size": True}, "target.batch_size: expected int"),
        ({"name": "x", "dtype": "int8"}, "allowed: fp32, bf16, fp16"),
        ({"name": "x", "device": "tpu"}, "allowed: cpu, cuda, cuda:<index>"),
        ({"name": "x", "threads": 0}, "target.threads"),
        ({"name": "x", "channels_last": "yes"}, "target.channels_last: expected bool"),
        ({"device": "cpu"}, "target.name: missing"),
        (
            {"name": "x", "mode": "training"},
            "target.mode: 'training'; allowed: inference, train_step",
        ),
        ({"name": "x", "device_name": ""}, "target.device_name: expected 1 to 255 characters"),
    ],
)
def test_bad_target_sections_name_the_key(data: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        HardwareProfile.from_dict(data)
    assert needle in str(info.value)


def test_unknown_profile_lists_the_known_ones() -> None:
    extra = {"edge": HardwareProfile(name="edge", threads=1)}
    with pytest.raises(UnknownProfileError) as info:
        get_profile("tpu-v9", extra=extra)
    message = str(info.value)
    assert "tpu-v9" in message and "edge" in message
    assert all(name in message for name in BUILTIN_PROFILES)
    assert info.value.exit_code == 2 and isinstance(info.value, RsSearchError)
    assert get_profile("edge", extra=extra).threads == 1
    # the space's own definition wins over a built-in of the same name
    own = HardwareProfile(name="cpu-fp32-b1", batch_size=3)
    assert get_profile("cpu-fp32-b1", extra={"cpu-fp32-b1": own}).batch_size == 3


def test_device_names() -> None:
    name = device_name("cpu")
    assert cpu_model() in name and "CPUs)" in name
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RsSearchError, match="no CUDA device"):
            device_name("cuda")
    else:
        assert device_name("cuda:0") == torch.cuda.get_device_name(0)


def test_a_space_target_with_a_bad_mode_names_the_key() -> None:
    from rs_search.errors import SpaceError
    from rs_search.space import parse_space

    with pytest.raises(
        SpaceError, match=r"target\.mode.*'training'; allowed: inference, train_step"
    ):
        parse_space(
            {
                "architecture": {"depth": [[1, 1, 1, 1]], "width": 0.25, "resolution": 32},
                "recipe": {},
                "objectives": {"accuracy": "maximize", "latency": "minimize"},
                "target": {"name": "edge", "mode": "training"},
            }
        )
