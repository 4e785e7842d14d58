import pytest
pytestmark = [pytest.mark.django_db(transaction=True)]
def test_dbg(make_user, official_client):
    from backendai import services
    user = make_user("cli@example.com")
    services.set_announcement(True, "maintenance at noon")
    r = official_client.cli(user.main_keypair, "admin", "announcement", "get")
    print("OUT", r.stdout, "ERR", r.stderr)
    r = official_client.script(user.main_keypair, """
from ai.backend.client.session import Session
with Session() as s:
    print(s.Manager.get_announcement())
""")
    print("OUT", r.stdout, "ERR", r.stderr)
