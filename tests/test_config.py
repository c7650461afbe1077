import json

import pytest

from eatsched.core.config import ConfigError, EATConfig
from eatsched.core.profiles import ProfileError, get_profile, load_profile


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"rate": -0.1}, "rate"),
        ({"rate": 0}, "rate"),
        ({"nodes": 0}, "nodes"),
        ({"nodes": 2, "patch_choices": (1, 2, 4)}, "patch_choices"),
        ({"patch_choices": (3,)}, "patch_choices"),
        ({"s_min": 10, "s_max": 5}, "s_max"),
        ({"s_min": 0}, "s_min"),
        ({"profile": "no-such-gpu"}, "profile"),
        ({"tick": 0}, "tick"),
        ({"mode": "fast"}, "mode"),
        ({"speeds": (1.0, 2.0)}, "speeds"),
        ({"queue_len": 0}, "queue_len"),
        ({"arrival": "trace"}, "trace_path"),
        ({"w_t": -1}, "w_t"),
    ],
)
def test_invalid_values_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        EATConfig(**kw)
    assert e.value.field == field
    assert str(e.value).startswith(field + ":")


def test_replace_validates_and_rejects_unknown_fields():
    cfg = EATConfig()
    assert cfg.replace(nodes=4).nodes == 4
    with pytest.raises(ConfigError, match="bogus"):
        cfg.replace(bogus=1)
    with pytest.raises(ConfigError, match="^rate"):
        cfg.replace(rate=-1)


def test_config_round_trips_through_dict():
    cfg = EATConfig(nodes=4, rate=0.05, speeds=(1, 1, 2, 2), patch_choices=(1, 2))
    assert EATConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_reference_profile_matches_spec():
    p = get_profile("reference")
    assert p.step_time == {1: 0.315, 2: 0.15625, 4: 0.14, 8: 0.1}
    assert p.init_time == {1: 24.0, 2: 24.0, 4: 32.0, 8: 30.0}


def test_paper_4090_profile_matches_table_vi():
    p = get_profile("paper-4090")
    assert (p.step_time[1], p.step_time[2], p.step_time[4]) == (0.53, 0.29, 0.20)
    assert (p.init_time[1], p.init_time[2], p.init_time[4]) == (33.5, 31.9, 35.0)
    # k = 8 extrapolated with DistriFusion's 4 -> 8 patch ratio (paper Table I)
    assert p.step_time[8] == pytest.approx(0.20 * 4.81 / 7.6, abs=1e-4)


def test_h100_profile_comes_from_the_calibration_file():
    p = get_profile("h100-measured")
    assert p.step_time[1] == pytest.approx(0.11431054306030273)
    assert p.step_time[2] == pytest.approx(0.056882368087768555)
    p512 = get_profile("h100-measured-512")
    assert p512.step_time[1] == pytest.approx(0.031932415008544922)
    load = 7.8224726960000055 + 0.772202067000002 + 0.35771597800000166
    assert p.init_time[1] == pytest.approx(load, abs=1e-3)
    assert p.init_time[4] > p.init_time[1]


def test_packaged_calibration_equals_shared_copy():
    from importlib import resources
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "calibration"
    if not shared.is_dir():
        pytest.skip("../shared not beside the checkout")
    for f in shared.glob("*.json"):
        packaged = resources.files("eatsched.data.calibration").joinpath(f.name).read_text()
        assert json.loads(packaged) == json.loads(f.read_text())


def test_user_profile_from_toml_and_json(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\n[step_time]\n1 = 0.4\n2 = 0.25\n[init_time]\n1 = 10.0\n2 = 11.0\n')
    p = load_profile(toml)
    assert p.name == "mine" and p.step_time == {1: 0.4, 2: 0.25} and p.init_time[2] == 11.0
    cfg = EATConfig(nodes=2, profile=str(toml), patch_choices=(1, 2))
    assert cfg.time_profile.step_time[2] == 0.25
    js = tmp_path / "other.json"
    js.write_text(json.dumps({"step_time": {"1": 0.3}, "init_time": {"1": 5}}))
    assert load_profile(js).name == "other"
    with pytest.raises(ConfigError, match="patch_choices"):  # profile lacks k = 4
        EATConfig(nodes=4, profile=str(toml))


def test_bad_profile_files(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "x.toml")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"step_time": {"1": -1}, "init_time": {"1": 5}}))
    with pytest.raises(ProfileError, match=r"step_time\[1\]"):
        load_profile(bad)
    bad.write_text(json.dumps({"step_time": {"3": 1}, "init_time": {"3": 5}}))
    with pytest.raises(ProfileError, match="patch count 3"):
        load_profile(bad)


def test_parse_overrides_converts_by_field_type():
    from eatsched.core.config import parse_field_values

    parse_overrides = lambda items, **kw: parse_field_values(EATConfig, items, "--set", "field", **kw)  # noqa: E731
    got = parse_overrides(["r_max=1e9", "s-min=6", "paper_literal=yes", "patch_choices=1, 2", "speeds=1,0.5",
                           "regroup_time=none", "mode=event"])
    assert got == {"r_max": 1e9, "s_min": 6, "paper_literal": True, "patch_choices": (1, 2), "speeds": (1.0, 0.5),
                   "regroup_time": None, "mode": "event"}
    assert EATConfig(nodes=2, **got).patch_choices == (1, 2)
    with pytest.raises(ConfigError, match="s_min"):
        parse_overrides(["s_min=1.5"])
    with pytest.raises(ConfigError, match="own option: --nodes"):
        parse_overrides(["nodes=3"], reserved={"nodes": "--nodes"})


def test_every_field_reads_back_from_its_printed_default():
    import dataclasses

    from eatsched.core.config import parse_field_values

    c = EATConfig()
    text = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    names = [f.name for f in dataclasses.fields(c) if f.name not in ("extra", "profile")]
    items = [f"{name}={text(getattr(c, name))}" for name in names]
    assert EATConfig(**parse_field_values(EATConfig, items, "--set", "field")) == c
