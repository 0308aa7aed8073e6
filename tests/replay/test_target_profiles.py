"""Target profiles: defaults, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.target_profiles import ProfileError, load_profile, profile_from_dict


def test_defaults_follow_supabase_conventions() -> None:
    p = load_profile(None)
    assert p.spec("rpc:scan_ticket_atomic").path == "/rest/v1/rpc/scan_ticket_atomic"
    assert p.spec("rpc:scan_ticket_atomic").arg_name("gate") == "p_gate"
    assert p.spec("rpc:scan_ticket_atomic").arg_name("p_gate") == "p_gate"
    assert (p.spec("rest:events").path, p.spec("rest:events").method) == ("/rest/v1/events", "GET")
    assert p.spec("fn:stripe-webhook").path == "/functions/v1/stripe-webhook"


def test_file_overrides(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        '[targets."rpc:scan_ticket_atomic"]\npath = "/rest/v1/rpc/scan_v2"\nargs = { gate = "gate_id" }\n'
    )
    s = load_profile(f).spec("rpc:scan_ticket_atomic")
    assert (
        s.path == "/rest/v1/rpc/scan_v2"
        and s.arg_name("gate") == "gate_id"
        and s.arg_name("lane") == "p_lane"
    )


@pytest.mark.parametrize("d,match", [
    ({"target": {}}, "unknown key 'target'"),
    ({"targets": {"bogus": {}}}, 'targets."bogus"'),
    ({"targets": {"rpc:x": {"path": "no-slash"}}}, r'targets."rpc:x".path'),
    ({"targets": {"rpc:x": {"method": "FETCH"}}}, r'targets."rpc:x".method'),
    ({"targets": {"rpc:x": {"args": {"a": 1}}}}, r'targets."rpc:x".args'),
    ({"targets": {"rpc:x": {"colour": "red"}}}, r'targets."rpc:x".colour'),
])  # fmt: skip
def test_errors_name_the_key(d: dict, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        profile_from_dict(d)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[targets\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(bad)
