"""The master user a deployment declares lands on the real server, whatever its generated password holds."""

from __future__ import annotations

import pg8000.native
import pytest

from tandem.localpg import LocalPostgres


@pytest.mark.parametrize("password", ["p4$$NuqF$$x", 'it\'s "quoted" $tag$ ;--', "plain"])
def test_a_generated_password_with_any_character_makes_a_working_login(pg_server: LocalPostgres, password: str) -> None:
    """Secrets Manager may put ``$$`` in a password: a DO $$ … $$ block once ended there and start-up failed."""
    pg_server.ensure_superuser("tandem_admin_test", "first")
    pg_server.ensure_superuser("tandem_admin_test", password)  # second call: the role exists, the password moves
    conn = pg8000.native.Connection(
        user="tandem_admin_test", password=password, host="127.0.0.1", port=pg_server.port, database="postgres"
    )
    assert conn.run("SELECT current_user") == [["tandem_admin_test"]]
    conn.close()
