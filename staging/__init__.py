"""The embedded stand-in target: Supabase-shaped endpoints and a Stripe subset on aiohttp + SQLite."""
