"""``backendai.prepared``: hot reads compiled once per shape, answering exactly what the queryset does."""
from __future__ import annotations

from unittest import mock

import pytest
from django.db.models.sql.compiler import SQLCompiler

from backendai.prepared import Prepared, attach

pytestmark = pytest.mark.django_db


@pytest.fixture
def users(make_user):
    return [make_user(f"prepared{i}@example.com") for i in range(5)]


def keypairs():
    from accounts.models import Keypair

    return Keypair.objects.select_related("user", "resource_policy")


def compilations():
    """Counts the full compilations of any query (``SQLCompiler.as_sql``)."""
    return mock.patch.object(SQLCompiler, "as_sql", autospec=True, side_effect=SQLCompiler.as_sql)


def test_it_returns_what_the_queryset_returns_with_the_related_rows_loaded(users, django_assert_num_queries):
    read = Prepared("test")
    key = users[2].main_keypair.access_key
    expected = list(keypairs().filter(access_key=key))
    with django_assert_num_queries(1):
        found = read.fetch(keypairs().filter(access_key=key))
        assert found[0].user.email == users[2].email  # joined: no second query
        assert found[0].resource_policy.name == expected[0].resource_policy.name
    assert [k.pk for k in found] == [k.pk for k in expected]
    assert found[0].secret_key == expected[0].secret_key and found[0].is_active is expected[0].is_active


def test_the_next_call_of_the_same_shape_runs_the_kept_statement_with_its_own_values(users):
    read = Prepared("test")
    read.first(keypairs().filter(access_key=users[0].main_keypair.access_key))
    with compilations() as as_sql:
        found = read.first(keypairs().filter(access_key=users[3].main_keypair.access_key))
    assert as_sql.call_count == 0
    assert found.user == users[3]
    assert read.first(keypairs().filter(access_key="no-such-key")) is None


def test_another_filter_is_another_shape(users):
    read = Prepared("test")
    key = users[1].main_keypair.access_key
    assert read.first(keypairs().filter(access_key=key)).pk == key
    with compilations() as as_sql:
        assert read.first(keypairs().filter(access_key=key, is_active=False)) is None
    assert as_sql.call_count == 1


def test_every_page_of_a_list_is_one_shape_with_its_own_rows(users):
    from accounts.models import User

    def ordered():
        return User.objects.filter(email__startswith="prepared").order_by("email")

    read = Prepared("test")
    everyone = [u.email for u in ordered()]
    assert [u.email for u in read.fetch(ordered()[0:2])] == everyone[0:2]
    with compilations() as as_sql:
        assert [u.email for u in read.fetch(ordered()[2:4])] == everyone[2:4]
        assert [u.email for u in read.fetch(ordered()[4:6])] == everyone[4:5]
        assert [u.email for u in read.fetch(ordered()[1:2])] == everyone[1:2]
    assert as_sql.call_count == 0


def test_reads_it_does_not_keep_still_answer_as_the_queryset_does(users):
    from accounts.models import User

    read = Prepared("test")
    emails = User.objects.filter(email__startswith="prepared").order_by("email")
    assert read.fetch(User.objects.filter(pk__in=[])) == []  # Django knows it is empty: no statement
    assert read.fetch(emails.values("email")) == list(emails.values("email"))
    assert [u.pk for u in read.fetch(emails.select_for_update())] == [u.pk for u in emails]
    assert read.fetch(User.objects.all().order_by("email")) == list(User.objects.order_by("email"))  # no WHERE


def test_past_its_shape_limit_a_read_runs_uncached_and_still_right(users):
    read = Prepared("test", max_shapes=1)
    key = users[0].main_keypair.access_key
    read.first(keypairs().filter(access_key=key))
    with compilations() as as_sql:
        assert read.first(keypairs().filter(access_key=key, is_active=True)).pk == key
        assert read.first(keypairs().filter(access_key=key, is_active=True)).pk == key
    assert as_sql.call_count == 2  # not kept: compiled each time


def test_prefetched_related_lookups_are_still_loaded(users, django_assert_num_queries):
    from accounts.models import User

    read = Prepared("test")
    query = User.objects.filter(pk__in=[u.pk for u in users]).prefetch_related("keypairs").order_by("email")
    found = read.fetch(query)
    with django_assert_num_queries(0):
        assert [[k.pk for k in u.keypairs.all()] for u in found] == [[u.main_keypair_id] for u in found]


def test_attach_leaves_what_prefetch_related_leaves(users, django_assert_num_queries):
    from accounts.models import Keypair

    owners = users[:3]
    extra = Keypair.objects.create(access_key="AKPREPAREDEXTRA00001", secret_key="s" * 40, user=owners[0],
                                   resource_policy=owners[0].main_keypair.resource_policy)
    rows = list(Keypair.objects.filter(user__in=owners).order_by("access_key"))
    attach(owners, "keypairs", rows)
    with django_assert_num_queries(0):
        assert sorted(k.pk for k in owners[0].keypairs.all()) == sorted([owners[0].main_keypair_id, extra.pk])
        assert [k.pk for k in owners[1].keypairs.all()] == [owners[1].main_keypair_id]
        assert all(k.user is owner for owner in owners for k in owner.keypairs.all())
    attach([users[4]], "keypairs", [])
    with django_assert_num_queries(0):
        assert list(users[4].keypairs.all()) == []
