"""Init container of every paysys pod: wait until the database schema is at least this image's.

The migration Job (`paysys db deploy`) brings the schema to head; pods of a new version must not
serve before it has. Passes when the database's revision is this image's head, or a revision
this image does not know (a NEWER one: rolling back code after an expand-only migration is
fine). Waits while the database is unreachable, unmigrated or at an OLDER known revision.
Exit 0 when ready, 1 after WAIT_FOR_SCHEMA_TIMEOUT seconds (default 600).
Mounted from the ConfigMap `paysys-scripts`; runnable anywhere paysys is installed.
"""

from __future__ import annotations

import os
import sys
import time


def schema_ready() -> tuple[bool, str]:
    from alembic.script import ScriptDirectory

    from paysys.core.config import Settings
    from paysys.db import migrate

    settings = Settings()
    script = ScriptDirectory.from_config(migrate.alembic_config(settings))
    known = {rev.revision for rev in script.walk_revisions()}
    current, head = migrate.current_and_head(settings)
    if current is None:
        return False, "database not migrated yet"
    if current == head:
        return True, f"schema at head {head}"
    if current not in known:
        return True, f"schema at {current}, newer than this image's head {head}"
    return False, f"schema at {current}, waiting for {head}"


def main() -> int:
    timeout = float(os.environ.get("WAIT_FOR_SCHEMA_TIMEOUT", "600"))
    interval = float(os.environ.get("WAIT_FOR_SCHEMA_INTERVAL", "2"))
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready, why = schema_ready()
        except Exception as exc:  # unreachable database: keep waiting
            ready, why = False, f"database unreachable ({type(exc).__name__})"
        print(f"wait-for-schema: {why}", flush=True)
        if ready:
            return 0
        if time.monotonic() >= deadline:
            return 1
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
