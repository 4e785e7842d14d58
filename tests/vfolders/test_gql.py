"""``vfolders.services.vfolder_list`` (what the GraphQL ``vfolder_list`` answers): the
values the client's formatters expect, who sees what, consistent pagination, filters
and order."""
import pytest

from backendai.api import errors

pytestmark = pytest.mark.django_db

CLIENT_FIELDS = ["host", "name", "created_at", "creator", "group", "permission", "ownership_type", "status",
                 "id", "usage_mode", "user", "cloneable"]


def test_items_carry_the_fields_the_client_asks_for_as_it_reads_them(owner, make_folder):
    from vfolders.services import vfolder_list

    folder = make_folder(owner, "data")
    items, total = vfolder_list(owner, 20, 0)
    assert total == 1
    item = items[0]
    assert set(CLIENT_FIELDS) <= set(item)
    assert item["id"] == str(folder.id) and item["host"] == "local:volume1" and item["name"] == "data"
    assert item["status"] == "ready" and item["permission"] == "rw" and item["ownership_type"] == "user"
    assert item["usage_mode"] == "general" and item["user"] == str(owner.pk) and item["group"] is None
    assert item["creator"] == owner.email and item["cloneable"] is False
    assert item["created_at"] == folder.created_at.isoformat()


def test_visibility_follows_roles(owner, member, outsider, domain_admin, superadmin, make_folder):
    from vfolders import services
    from vfolders.services import vfolder_list

    make_folder(owner, "o")
    make_folder(member, "m")
    make_folder(outsider, "x")
    services.invite(owner, "o", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)

    def names(user):
        return sorted(i["name"] for i in vfolder_list(user, 100, 0)[0])

    assert names(owner) == ["o"]
    assert names(member) == ["m", "o"]
    assert names(outsider) == ["x"]
    assert names(domain_admin) == ["m", "o"]
    assert names(superadmin) == ["m", "o", "x"]
    shared = [i for i in vfolder_list(member, 100, 0)[0] if i["name"] == "o"][0]
    assert shared["permission"] == "ro"


def test_pagination_is_consistent_and_costs_four_queries(owner, make_folder, django_assert_max_num_queries):
    from vfolders.services import vfolder_list

    for i in range(7):
        make_folder(owner, f"f{i}")
    seen, offset, total = [], 0, None
    while total is None or offset < total:
        with django_assert_max_num_queries(4):
            items, total = vfolder_list(owner, 3, offset)
        assert items
        seen += [i["name"] for i in items]
        offset += len(items)
    assert total == 7 and sorted(seen) == [f"f{i}" for i in range(7)] and len(set(seen)) == 7


def test_filters_and_order(owner, make_folder):
    from vfolders import services
    from vfolders.services import vfolder_list

    make_folder(owner, "alpha", usage_mode="model")
    make_folder(owner, "beta")
    make_folder(owner, "gamma", usage_mode="data")
    services.move_to_trash(owner, "gamma")

    def names(filter=None, order=None):
        return [i["name"] for i in vfolder_list(owner, 100, 0, filter=filter, order=order)[0]]

    assert names(order="name") == ["alpha", "beta", "gamma"]
    assert names(order="-name") == ["gamma", "beta", "alpha"]
    assert names('name == "beta"') == ["beta"]
    assert names('status != "delete-pending"', "name") == ["alpha", "beta"]
    assert names('name ilike "%A%" & usage_mode in ["model", "data"]', "name") == ["alpha", "gamma"]
    assert names('(name == "alpha" | name == "beta") & !(usage_mode == "model")') == ["beta"]
    assert names("cloneable == false", "+name") == ["alpha", "beta", "gamma"]
    for bad_filter in ("name ==", "nope == 1", 'name = "x"', "(name == 'a'"):
        with pytest.raises(errors.InvalidAPIParameters):
            names(bad_filter)
    with pytest.raises(errors.InvalidAPIParameters):
        names(order="secret_column")


def test_group_id_narrows_to_one_project(domain_admin, owner, defaults, make_folder):
    from vfolders import services
    from vfolders.services import vfolder_list

    make_folder(owner, "personal")
    services.create_folder(domain_admin, name="proj", group=str(defaults.project.pk))
    items, total = vfolder_list(domain_admin, 10, 0, group_id=str(defaults.project.pk))
    assert [i["name"] for i in items] == ["proj"] and total == 1
    assert items[0]["group"] == str(defaults.project.pk) and items[0]["ownership_type"] == "group"
