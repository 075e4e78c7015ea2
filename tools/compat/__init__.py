"""Compatibility harness: run stabilize's own public-API tests against stabilize_redis.

``shim`` holds the import aliases (``stabilize.*`` -> ``stabilize_redis.*``, ``tests.conftest``
-> ``conftest_plugin``), ``conftest_plugin`` the pytest fixtures replacing stabilize's conftest,
``run`` the runner that prints the per-file table (``python -m tools.compat.run TESTS_DIR``).
Nothing here patches engine behaviour; see README.md.
"""
