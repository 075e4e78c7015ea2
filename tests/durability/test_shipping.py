"""The wheel carries the SQL migrations (and the durability Lua scripts), so an installed
package can run ``stabilize-redis migrate`` and the checkpointer."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_migrations_and_durability_scripts(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("stabilize_redis-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {f"stabilize_redis/migrations/{p.name}" for p in (ROOT / "deploy" / "migrations").glob("*.sql")}
    assert migrations and migrations <= names
    scripts = {f"stabilize_redis/lua/{n}.lua" for n in ("checkpoint_read", "checkpoint_ack", "checkpoint_lease", "evict")}
    assert scripts | {"stabilize_redis/lua/includes/stream_ids.lua"} <= names
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("stabilize_redis/migrations/0001_initial.sql").decode()
    assert shipped == (ROOT / "deploy" / "migrations" / "0001_initial.sql").read_text()
