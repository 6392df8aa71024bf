"""How people sign in: passwords (throttled), OpenID Connect, a trusted proxy's header, and session limits."""
