"""Durability: PostgreSQL as the durable record of a Redis namespace.

``pg`` (settings and pools), ``migrate`` (schema migrations), ``snapshots`` (the snapshot and
event-log store), ``checkpointer`` (drains dirty workflows into Postgres, evicts old finished
ones); restore and recovery live beside them. Modules that talk to Postgres need the
``postgres`` extra (psycopg 3).
"""
