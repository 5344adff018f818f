"""runner.py's own choices, apart from the processes it starts (test_e2e.py)."""

import stat
from pathlib import Path

from runner import kept_admin_password


def test_generated_admin_password_is_kept_for_the_next_start(tmp_path: Path) -> None:
    # The users service never resets an existing admin's password: a second start
    # (or `runner.py demo` after `make up`) must print and use the first one.
    path = tmp_path / ".shop-admin-password"
    first = kept_admin_password(path)
    assert len(first) >= 16
    assert kept_admin_password(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
