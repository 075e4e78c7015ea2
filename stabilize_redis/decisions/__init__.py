"""Pure decisions: what a transition does, from what was read; no Redis, no user code."""
