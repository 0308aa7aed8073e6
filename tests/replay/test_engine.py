"""The engine's pieces that need no target: keys and run ids (the progress line: test_progress)."""

from __future__ import annotations

from replay.engine import keys_from_env, new_run_id


def test_keys_from_env_and_run_ids() -> None:
    k = keys_from_env(
        {
            "SUPABASE_ANON_KEY": "a",
            "STRIPE_TEST_SK": "sk_test_b",
            "STRIPE_WEBHOOK_SECRET": "whsec_c",
        }
    )
    assert k.values() == ["a", "sk_test_b", "whsec_c"] and "sk_test_b" not in repr(k)
    a, b = new_run_id(), new_run_id()
    assert a != b and a.startswith("gr-")
