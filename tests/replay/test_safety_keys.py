"""Keys checked as the services read them: every spelling of a live key or of Stripe's own API is
refused before a byte is sent (a loopback server counts the arrivals)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.builders import Credentials
from replay.safety import SafetyError, as_read, check_keys, is_real_stripe
from tests.replay.loopback_server import LoopbackServer
from tests.replay.test_cli import cli, write_trace

# Live-looking keys are assembled at run time, so no live key pattern stands in the source.
SK_LIVE, RK_LIVE = "sk_" + "live_", "rk_" + "live_"
LIVE = SK_LIVE + "0123456789abcdefSECRETPART"

KEY_VARIANTS = [
    ("STRIPE_TEST_SK", " " + LIVE),
    ("STRIPE_TEST_SK", "\t" + LIVE),
    ("STRIPE_TEST_SK", f'"{LIVE}"'),
    ("STRIPE_TEST_SK", f"'{LIVE}'"),
    ("STRIPE_TEST_SK", f"Bearer {LIVE}"),
    ("STRIPE_TEST_SK", f"Bearer  {LIVE}"),
    ("STRIPE_TEST_SK", RK_LIVE + "0123456789SECRETPART\n"),
    ("STRIPE_WEBHOOK_SECRET", f"x {LIVE}"),
    ("SUPABASE_ANON_KEY", f"Bearer {LIVE}"),
    ("SUPABASE_SERVICE_ROLE_KEY", LIVE),
    ("STRIPE_SECRET_KEY", f"  '{LIVE}'  "),
]
BEARER_AND_BLANKS = [
    ("SUPABASE_ANON_KEY", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.SECRETPART", "Bearer"),
    ("SUPABASE_ANON_KEY", "bearer:eyJhbGciOiJIUzI1NiJ9.e30.SECRETPART", "Bearer"),
    ("STRIPE_WEBHOOK_SECRET", " whsec_SECRETPART", "blanks or quotes"),
    ("STRIPE_TEST_SK", '"sk_test_SECRETPART"', "blanks or quotes"),
]
STRIPE_SPELLINGS = [
    "https://api.stripe.com",
    "https://API.Stripe.COM",
    "https://api.stripe.com.",
    "https://api.stripe.com..",
    "https://api.stripe.com:443",
    "https://api.stripe.com.:443/v1",
    "https://user:pw@api.stripe.com",
    "https://api%2Estripe%2Ecom",
    "https://api\u3002stripe\u3002com",
    "https://\uff41\uff50\uff49.stripe.com",
    "http://api.stripe.com/v1",
    "https://files.stripe.com",
    "https://stripe.com",
    "https://x.example\\@api.stripe.com",
    "https://api.stripe.com\\@127.0.0.1",
    "  https://api.stripe.com  ",
    "https://[api.stripe.com",
]


@pytest.fixture(scope="module")
def loop_server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "t.grt", n_scans=5, webhooks=False)


def _replay(trace: Path, server: LoopbackServer, env: dict, *extra: str):
    env = {"SUPABASE_ANON_KEY": "anon-test-key", **env}
    args = [
        "replay",
        str(trace),
        "--target",
        server.url,
        "-o",
        str(trace.with_suffix(".grr")),
        "-q",
    ]
    return CliRunner().invoke(cli(), [*args, *extra], env=env)


def test_a_clean_key_does_send(trace: Path, loop_server: LoopbackServer) -> None:
    """The control: the same replay with clean keys reaches the server (so zero below means refused)."""
    before = len(loop_server.stamps())
    r = _replay(trace, loop_server, {"STRIPE_TEST_SK": "sk_test_ok"})
    assert r.exit_code == 0, r.output
    assert len(loop_server.stamps()) == before + 5


@pytest.mark.parametrize("var,value", KEY_VARIANTS)
def test_live_key_variants_refused_before_a_byte(
    trace: Path, loop_server: LoopbackServer, var: str, value: str
) -> None:
    before = len(loop_server.stamps())
    r = _replay(trace, loop_server, {var: value})
    assert r.exit_code == 104 and "nothing was sent" in r.output, r.output
    assert var in r.output and "SECRETPART" not in r.output
    assert len(loop_server.stamps()) == before and not trace.with_suffix(".grr").exists()


@pytest.mark.parametrize("var,value,match", BEARER_AND_BLANKS)
def test_bearer_and_wrapped_keys_refused(
    trace: Path, loop_server: LoopbackServer, var: str, value: str, match: str
) -> None:
    before = len(loop_server.stamps())
    r = _replay(trace, loop_server, {var: value})
    assert r.exit_code == 104 and match in r.output and "SECRETPART" not in r.output, r.output
    assert len(loop_server.stamps()) == before


@pytest.mark.parametrize("url", STRIPE_SPELLINGS)
def test_stripe_api_spellings_need_the_real_opt_in(
    trace: Path, loop_server: LoopbackServer, url: str
) -> None:
    before = len(loop_server.stamps())
    for env, extra in (({}, ("--stripe", url)), ({"STRIPE_API_BASE": url}, ())):
        r = _replay(trace, loop_server, {"STRIPE_TEST_SK": "sk_test_ok", **env}, *extra)
        assert r.exit_code == 104 and "Stripe's own API" in r.output, (url, r.output)
        assert "--stripe real" in r.output and "pw" not in r.output
    assert len(loop_server.stamps()) == before


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v1", "https://stripe-standin.example",
                                 "https://notstripe.com", "https://stripe.com.evil.example"])  # fmt: skip
def test_other_hosts_are_not_stripe(url: str) -> None:
    assert not is_real_stripe(url)


def test_real_stripe_with_a_test_key_is_checked_as_read() -> None:
    check_keys(Credentials(stripe_key="sk_test_1"), "real")
    with pytest.raises(SafetyError, match="blanks or quotes"):
        check_keys(Credentials(stripe_key=" sk_test_1"), "real")


_WRAP = st.sampled_from(["", " ", "\t", "\n", '"', "'", "`", "\u201c"])


@settings(deadline=None)
@given(
    pre=st.lists(_WRAP, max_size=3).map("".join),
    post=st.lists(_WRAP, max_size=3).map("".join),
    bearer=st.sampled_from(["", "Bearer ", "bearer  ", "BEARER\t"]),
    prefix=st.sampled_from([SK_LIVE, RK_LIVE, SK_LIVE.upper()]),
    body=st.text("abcdefXYZ0123456789", min_size=1, max_size=30),
    var=st.sampled_from(
        ["STRIPE_TEST_SK", "STRIPE_WEBHOOK_SECRET", "SUPABASE_ANON_KEY", "STRIPE_X"]
    ),
)
def test_any_wrapping_of_a_live_key_is_refused(
    pre: str, post: str, bearer: str, prefix: str, body: str, var: str
) -> None:
    value = pre + bearer + prefix + body + post
    with pytest.raises(SafetyError, match=var):
        check_keys(Credentials(), "standin", {var: value})


@settings(deadline=None)
@given(st.text("abc_0123456789", min_size=1, max_size=20), st.lists(_WRAP, max_size=4))
def test_as_read_removes_only_the_wrapping(key: str, wrap: list[str]) -> None:
    if key[0] not in "_" and key[-1] not in "_":
        assert as_read("".join(wrap) + key + "".join(reversed(wrap))) == key
