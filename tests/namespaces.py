"""Removing what a test wrote to a shared Redis: every key of its own namespace, nothing else."""

from __future__ import annotations

import redis


def delete_namespace(url: str, namespace: str) -> None:
    """Remove every key of ``namespace`` (created by this test) and nothing else, in batches."""
    client = redis.Redis.from_url(url)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
