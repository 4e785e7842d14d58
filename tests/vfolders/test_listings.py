"""Folder listings behave like the real manager's: newest first with a stable
tiebreak, totals that leave out folders whose deletion is under way or done,
pages that add up to exactly the total, the listings by kind (own, invited,
project) and Backend.AI's enum names in filters."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from backendai.api import errors

pytestmark = pytest.mark.django_db


def names(rows):
    return [row["name"] for row in rows]


def test_vfolder_list_is_newest_first_so_a_new_folder_is_on_the_first_page(owner, make_folder):
    from vfolders import services
    from vfolders.models import VFolder

    start = timezone.now() - timedelta(days=30)
    for i in range(25):
        folder = make_folder(owner, f"old{i:02d}")
        VFolder.objects.filter(pk=folder.pk).update(created_at=start + timedelta(hours=i))
    make_folder(owner, "brand-new")
    first_page, total = services.vfolder_list(owner, 20, 0)
    assert total == 26
    assert names(first_page)[:3] == ["brand-new", "old24", "old23"]
    oldest_first, _ = services.vfolder_list(owner, 3, 0, order="created_at")
    assert names(oldest_first) == ["old00", "old01", "old02"]


def test_folders_created_at_the_same_moment_keep_one_order_across_pages(owner, make_folder):
    from vfolders import services
    from vfolders.models import VFolder

    moment = timezone.now() - timedelta(days=1)
    made = [make_folder(owner, f"same{i}") for i in range(9)]
    VFolder.objects.filter(pk__in=[f.pk for f in made]).update(created_at=moment)
    whole, total = services.vfolder_list(owner, 100, 0)
    pages = []
    for offset in range(0, total, 4):
        pages += services.vfolder_list(owner, 4, offset)[0]
    assert [row["id"] for row in pages] == [row["id"] for row in whole]
    assert len({row["id"] for row in pages}) == 9
    assert [row["id"] for row in whole] == sorted((str(f.pk) for f in made), reverse=True)


def test_totals_leave_out_deletions_under_way_or_done_but_count_the_trash(owner, make_folder):
    from vfolders import services
    from vfolders.models import VFolder

    for name in ("alive", "trashed", "purging", "purged"):
        make_folder(owner, name)
    services.move_to_trash(owner, "trashed")
    VFolder.objects.filter(name="purging").update(status="delete-ongoing")
    VFolder.objects.filter(name="purged").update(status="delete-complete")
    for kind in ("all", "own"):
        rows, total = services.folder_page(owner, kind, 100, 0)
        assert sorted(names(rows)) == ["alive", "trashed"] and total == 2
    rows, total = services.folder_page(owner, "all", 100, 0, filter='status == "delete-ongoing"')
    assert rows == [] and total == 0


def test_pages_add_up_to_the_total_for_every_kind_and_filter(owner, member, defaults, superadmin, make_folder):
    from vfolders import services

    for i in range(5):
        make_folder(owner, f"mine{i}", usage_mode="model" if i % 2 else "general")
        make_folder(owner, f"shared{i}")
        services.invite(owner, f"shared{i}", "rw", [member.email])
        services.create_folder(superadmin, name=f"proj{i}", group=str(defaults.project.pk))
    for invitation in services.invitations_received(member):
        services.accept_invitation(member, invitation.id)
    cases = [(owner, "all", None), (owner, "own", 'usage_mode == "MODEL"'), (member, "invited", None),
             (member, "project", 'name ilike "proj%"'), (member, "all", None)]
    for user, kind, expression in cases:
        whole, total = services.folder_page(user, kind, 1000, 0, filter=expression)
        seen, offset = [], 0
        while offset < total:
            rows, again = services.folder_page(user, kind, 3, offset, filter=expression)
            assert again == total and rows
            seen += [row["id"] for row in rows]
            offset += len(rows)
        assert seen == [row["id"] for row in whole] and len(seen) == total, (kind, expression)
    assert services.folder_page(member, "invited", 100, 0)[1] == 5
    assert services.folder_page(member, "project", 100, 0)[1] == 5
    assert services.folder_page(member, "all", 100, 0)[1] == 10
    assert services.folder_page(owner, "own", 100, 0, filter='usage_mode == "MODEL"')[1] == 2


def test_the_listings_by_kind_show_their_own_kind_only(owner, member, outsider, superadmin, defaults, make_folder):
    from vfolders import services

    make_folder(owner, "personal")
    make_folder(owner, "lent")
    services.invite(owner, "lent", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    services.create_folder(superadmin, name="team", group=str(defaults.project.pk))

    def listed(user, kind):
        return sorted(names(services.folder_page(user, kind, 100, 0)[0]))

    assert listed(owner, "own") == ["lent", "personal"]
    assert listed(member, "own") == []
    assert listed(member, "invited") == ["lent"]
    assert listed(owner, "invited") == []
    assert listed(member, "project") == ["team"] and listed(owner, "project") == ["team"]
    assert listed(outsider, "project") == [] and listed(outsider, "invited") == []
    assert listed(superadmin, "own") == []
    invited = services.folder_page(member, "invited", 100, 0)[0][0]
    assert invited["permission"] == "ro" and invited["user"] == str(owner.pk)


def test_filters_take_backend_ai_enum_names_and_dates(owner, make_folder):
    from vfolders import services
    from vfolders.models import VFolder

    old = make_folder(owner, "old", permission="ro")
    VFolder.objects.filter(pk=old.pk).update(created_at=timezone.make_aware(datetime(2020, 6, 1)))
    make_folder(owner, "new")

    def listed(expression):
        return sorted(names(services.vfolder_list(owner, 100, 0, filter=expression)[0]))

    assert listed('status == "READY" & permission in ["READ_ONLY", "READ_WRITE"]') == ["new", "old"]
    assert listed('permission == "READ_ONLY"') == ["old"]
    assert listed('ownership_type == "USER"') == ["new", "old"]
    assert listed('created_at >= "2021-01-01" & created_at < "2099-01-01"') == ["new"]
    assert listed('created_at < "2021-01-01T00:00:00+00:00"') == ["old"]
    assert listed('creator ilike "%@example.com"') == ["new", "old"]
    for bad in ('created_at >= "yesterday"', 'id ilike "%1%"', 'cloneable == "yes"', 'user == 5',
                'created_at ilike "2020%"', 'name < null', "name == true"):
        with pytest.raises(errors.InvalidAPIParameters):
            services.vfolder_list(owner, 100, 0, filter=bad)


def test_domain_name_and_access_key_narrow_the_list_for_those_allowed(owner, member, outsider, superadmin,
                                                                      domain_admin, make_folder):
    from vfolders import services

    make_folder(owner, "o")
    make_folder(member, "m")
    make_folder(outsider, "x")
    assert sorted(names(services.vfolder_list(superadmin, 100, 0, domain_name="other")[0])) == ["x"]
    assert sorted(names(services.vfolder_list(owner, 100, 0, domain_name="default")[0])) == ["o"]
    with pytest.raises(errors.InsufficientPrivilege):
        services.vfolder_list(owner, 100, 0, domain_name="other")
    key = owner.main_keypair_id
    assert names(services.vfolder_list(domain_admin, 100, 0, access_key=key)[0]) == ["o"]
    assert names(services.vfolder_list(superadmin, 100, 0, access_key=key)[0]) == ["o"]
    assert names(services.vfolder_list(owner, 100, 0, access_key=key)[0]) == ["o"]
    for stranger in (member, outsider):
        with pytest.raises(errors.ObjectNotFound):
            services.vfolder_list(stranger, 100, 0, access_key=key)


def test_the_official_list_documents_answer_over_http(signed, owner, member, make_folder):
    from vfolders import services

    make_folder(owner, "lent")
    services.invite(owner, "lent", "rw", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    doc = ("query($limit:Int!, $offset:Int!, $filter: String, $order: String) {\n  vfolder_invited_list(\n"
           "      limit:$limit, offset:$offset, filter:$filter, order:$order) {\n    items { host name created_at "
           "creator group permission ownership_type status }\n    total_count\n  }\n}")
    response = signed(member).post("/admin/gql", {"query": doc, "variables": {
        "limit": 20, "offset": 0, "filter": None, "order": None}})
    assert response.status_code == 200, response.content
    body = response.json()["data"]["vfolder_invited_list"]
    assert body["total_count"] == 1 and body["items"][0]["name"] == "lent"
    assert body["items"][0]["permission"] == "rw" and body["items"][0]["status"] == "ready"
    bad = signed(member).post("/admin/gql", {"query": doc, "variables": {
        "limit": 20, "offset": 0, "filter": "name ==", "order": None}})
    assert bad.status_code == 400
