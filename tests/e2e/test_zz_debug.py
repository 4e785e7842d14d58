import pytest, threading, contextvars
pytestmark = [pytest.mark.django_db(transaction=True)]
def test_noorm(page, live_server):
    page.goto("/ui/login/")
def test_orm(page, live_server):
    from django.db import connections
    from accounts.models import User
    print("conn id before", id(connections["default"]), threading.current_thread().name)
    User.objects.count()
    print("conn id after", id(connections["default"]))
