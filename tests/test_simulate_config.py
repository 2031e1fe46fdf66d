"""Profiles and workloads: the shipped ones load; every bad field is named in the error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simlink.errors import ConfigError
from simlink.profile import PROFILES_DIR, load_profile
from simlink.workload import WORKLOADS_DIR, load_workload, plan_posts

GOOD_PROFILE = """
name = "t"
[link]
to_ground_kbit_s = 100
to_station_kbit_s = 50
one_way_delay_ms = 300
loss_percent = 1
[loss_of_signal]
orbit_min = 92
windows = [{ start_min = 10, duration_min = 5 }]
[cuts]
per_hour = 1
"""


@pytest.mark.parametrize("name", ["iss-ku", "degraded", "lunar", "dialup"])
def test_shipped_profiles_load(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.to_ground_bps > 0 and p.one_way_delay_s > 0


def test_lunar_is_1_3_s_one_way() -> None:
    assert load_profile("lunar").one_way_delay_s == pytest.approx(1.3)


def test_dark_windows_repeat_every_orbit() -> None:
    p = load_profile("iss-ku")
    w = p.dark_windows(3 * 92 * 60)
    assert len(w) == 6
    assert w[2][0] - w[0][0] == pytest.approx(92 * 60)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("to_ground_kbit_s = 100", "to_ground_kbit_s = -5", "link.to_ground_kbit_s"),
        ("to_ground_kbit_s = 100", 'to_ground_kbit_s = "fast"', "link.to_ground_kbit_s"),
        ("to_ground_kbit_s = 100\n", "", "link.to_ground_kbit_s"),
        ("one_way_delay_ms = 300", "delay_ms = 300", "link.one_way_delay_ms"),
        ("loss_percent = 1", "loss_percent = 1\nlos_percent = 2", "link.los_percent"),
        ("loss_percent = 1", "loss_percent = 80", "link.loss_percent"),
        ("duration_min = 5", "duration_min = 0", "loss_of_signal.windows[0].duration_min"),
        ("duration_min = 5", "duration_min = 90", "loss_of_signal.windows[0].duration_min"),
        ("orbit_min = 92", "orbit_min = 0", "loss_of_signal.orbit_min"),
        ("per_hour = 1", "per_hour = true", "cuts.per_hour"),
        ("per_hour = 1", "per_hour = 1\nat_s = 5", "cuts.at_s"),
        ("per_hour = 1", 'per_hour = 1\nat_s = [5, "x"]', "cuts.at_s"),
        ("per_hour = 1", "per_hour = 1\nat_s = [-1]", "cuts.at_s"),
        ('name = "t"', "", "name"),
    ],
)
def test_bad_profile_names_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in GOOD_PROFILE
    f = tmp_path / "p.toml"
    f.write_text(GOOD_PROFILE.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_profile(str(f))
    assert ei.value.field == field
    assert f"field '{field}'" in str(ei.value) and str(f) in str(ei.value)


def test_misspelt_field_is_pointed_at(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(GOOD_PROFILE.replace("one_way_delay_ms", "one_way_delay"))
    with pytest.raises(ConfigError, match=r"'link.one_way_delay' is there: misspelt"):
        load_profile(str(f))


def test_profile_not_toml(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(str(f))


def test_unknown_profile_name_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="iss-ku"):
        load_profile("no-such-profile")


def _workload(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    text = (WORKLOADS_DIR / "crew-day.toml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    (tmp_path / "texts.txt").write_text((WORKLOADS_DIR / "texts.txt").read_text())
    f = tmp_path / "w.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            "posts_per_astronaut_per_hour = 0.5",
            "posts_per_astronaut_per_hour = -1",
            "posts_per_astronaut_per_hour",
        ),
        ("photo_post_fraction = 0.4", "photo_post_fraction = 1.5", "photo_post_fraction"),
        ("accounts_per_post = 2", "accounts_per_post = 2.5", "accounts_per_post"),
        ('file = "texts.txt"', 'file = "missing.txt"', "text.file"),
        ("lines_max = 3", "lines_max = 0", "text.lines_max"),
        ('file = "skimage:retina.jpg"', 'file = "texts.txt"', "photos[1].file"),
        ('file = "skimage:retina.jpg"', 'file = "skimage:nope.jpg"', "photos[1].file"),
        ("{ count = 2, weight = 20 }", "{ count = 2, weight = 20, colour = 1 }", "photos_per_post[1].colour"),
        ("unique_photos = true", "unique_photos = 1", "unique_photos"),
        ('file = "skimage:retina.jpg"', 'file = "skimage:retina.jpg"\nenlarge = 9', "photos[1].enlarge"),
        ('file = "skimage:retina.jpg"', 'file = "skimage:retina.jpg"\ngrain = -1', "photos[1].grain"),
    ],
)
def test_bad_workload_names_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    f = _workload(tmp_path, (old, new))
    with pytest.raises(ConfigError) as ei:
        load_workload(str(f))
    assert ei.value.field == field


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKLOADS_DIR.glob("*.toml")))
def test_shipped_workloads_load(name: str) -> None:
    assert load_workload(name).texts


def test_plan_is_deterministic_and_photos_real_and_unique() -> None:
    from io import BytesIO

    from PIL import Image

    wl = load_workload("crew-day")
    a = plan_posts(wl, 4, 6 * 3600, seed=3)
    b = plan_posts(wl, 4, 6 * 3600, seed=3)
    assert a == b
    assert a != plan_posts(wl, 4, 6 * 3600, seed=4)
    photos = [ph.data for p in a for ph in p.photos]
    assert photos and len(set(photos)) == len(photos)
    for data in photos[:6]:
        Image.open(BytesIO(data)).load()  # still a valid, decodable image after the tag


def test_a_camera_frame_is_the_sample_enlarged() -> None:
    """large-photos: the sample photo at 4 x its size with grain, a decodable ~6 MB JPEG."""
    from io import BytesIO

    from PIL import Image

    from simlink.workload import _skimage_data

    (frame,) = load_workload("large-photos").photos
    with (
        Image.open(_skimage_data() / "hubble_deep_field.jpg") as sample,
        Image.open(BytesIO(frame.data)) as im,
    ):
        assert im.format == "JPEG" and im.size == (sample.width * 4, sample.height * 4)
        im.load()
    assert frame.media_type == "image/jpeg" and 4_000_000 < len(frame.data) < 9_000_000


def test_profiles_readme_documents_every_field() -> None:
    readme = (PROFILES_DIR / "README.md").read_text()
    for f in (
        "to_ground_kbit_s",
        "to_station_kbit_s",
        "one_way_delay_ms",
        "loss_percent",
        "orbit_min",
        "cut_after_s",
        "per_hour",
        "at_s",
    ):
        assert f in readme


def test_fixed_cuts_strike_when_the_profile_says_beside_the_random_ones(tmp_path: Path) -> None:
    from simlink.link import random_cut_times

    f = tmp_path / "p.toml"
    f.write_text(GOOD_PROFILE.replace("per_hour = 1", "per_hour = 0\nat_s = [30, 4.5, 9000]"))
    p = load_profile(str(f))
    assert p.cuts_at_s == (4.5, 30.0, 9000.0)
    assert random_cut_times(p, 3600, seed=1) == [4.5, 30.0]
    times = random_cut_times(dataclasses.replace(p, cuts_per_hour=60.0), 3600, seed=1)
    assert {4.5, 30.0} <= set(times) and times == sorted(times) and len(times) > 10
