"""Shared by the agents GraphQL tests (``tests/agents/test_gql_*.py``): the world
the permission matrix runs in, and the documents the official client 23.9.10 sends
(its ``func/scaling_group.py``, ``func/image.py``, ``func/agent.py``), byte for byte
where the client builds them from a template."""
from __future__ import annotations

from permission_matrix import World, gql_data

SG_FIELDS = ("name description is_active is_public created_at driver scheduler use_host_network wsproxy_addr "
             "wsproxy_api_token")
SG_DETAIL_FIELDS = ("name description is_active is_public created_at driver driver_opts scheduler scheduler_opts "
                    "use_host_network wsproxy_addr wsproxy_api_token")

SG_LIST = ("query($is_active: Boolean) {\n    scaling_groups(is_active: $is_active) {\n        "
           f"{SG_FIELDS}\n    }}\n}}\n")
SG_INFO = f"query($name: String) {{\n    scaling_group(name: $name) {{{SG_DETAIL_FIELDS}}}\n}}\n"
SG_CREATE = ("mutation($name: String!, $input: CreateScalingGroupInput!) {\n"
             "    create_scaling_group(name: $name, props: $input) {\n        ok msg scaling_group {name}\n    }\n}\n")
SG_MODIFY = ("mutation($name: String!, $input: ModifyScalingGroupInput!) {\n"
             "    modify_scaling_group(name: $name, props: $input) {\n        ok msg\n    }\n}\n")
SG_DELETE = "mutation($name: String!) {\n    delete_scaling_group(name: $name) {\n        ok msg\n    }\n}\n"
SG_ASSOC_DOMAIN = ("mutation($scaling_group: String!, $domain: String!) {\n"
                   "    associate_scaling_group_with_domain(\n            scaling_group: $scaling_group, "
                   "domain: $domain) {\n        ok msg\n    }\n}\n")
SG_DISSOC_DOMAIN = SG_ASSOC_DOMAIN.replace("associate_scaling_group_with_domain",
                                           "disassociate_scaling_group_with_domain")
SG_DISSOC_ALL_DOMAIN = ("mutation($domain: String!) {\n    disassociate_all_scaling_groups_with_domain("
                        "domain: $domain) {\n        ok msg\n    }\n}\n")
SG_ASSOC_GROUP = ("mutation($scaling_group: String!, $user_group: UUID!) {\n"
                  "    associate_scaling_group_with_user_group(\n            scaling_group: $scaling_group, "
                  "user_group: $user_group) {\n        ok msg\n    }\n}\n")
# the client declares String! here (UUID! above)
SG_DISSOC_GROUP = (SG_ASSOC_GROUP.replace("associate_scaling_group_with_user_group",
                                          "disassociate_scaling_group_with_user_group")
                   .replace("$user_group: UUID!", "$user_group: String!"))
SG_DISSOC_ALL_GROUP = ("mutation($group_id: UUID!) {\n    disassociate_all_scaling_groups_with_group("
                       "user_group: $group_id) {\n        ok msg\n    }\n}\n")
SG_ASSOC_KEYPAIR = ("mutation($scaling_group: String!, $access_key: String!) {"
                    " associate_scaling_group_with_keypair(scaling_group: $scaling_group, access_key: $access_key)"
                    " { ok msg } }")
SG_DISSOC_KEYPAIR = SG_ASSOC_KEYPAIR.replace("associate_scaling_group_with_keypair",
                                             "disassociate_scaling_group_with_keypair")
SG_FOR_DOMAIN = "query($d: String!) { scaling_groups_for_domain(domain: $d) { name } }"
SG_FOR_GROUP = "query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }"
SG_FOR_KEYPAIR = "query($k: String!) { scaling_groups_for_keypair(access_key: $k) { name } }"

IMAGE_LIST = ("query($is_operation: Boolean) {  images(is_operation: $is_operation) {    "
              "name registry architecture tag digest size_bytes aliases  }}")
IMAGE_GET = ("query($reference: String!, $architecture: String!) {\n    image(reference: $reference, "
             "architecture: $architecture) {\n        id name registry architecture tag digest size_bytes aliases\n"
             "    }\n}\n")
IMAGE_BY_ID = "query($id: String!) {\n    image(id: $id) {\n        id name registry tag\n    }\n}\n"
CUSTOMIZED = "query {\n    customized_images {\n        id name registry labels { key value }\n    }\n}\n"
RESCAN = "mutation($registry: String) {  rescan_images(registry:$registry) {   ok msg task_id  }}"
RESCAN_26 = ("mutation($registry: String, $project: String) {\n    rescan_images(registry:$registry, project: "
             "$project) {\n       ok msg task_id\n    }\n}\n")
ALIAS = "mutation($alias: String!, $target: String!) {  alias_image(alias: $alias, target: $target) {   ok msg  }}"
DEALIAS = "mutation($alias: String!) {  dealias_image(alias: $alias) {   ok msg  }}"
FORGET = ("mutation($reference: String!, $architecture: String!) {\n    forget_image(reference: $reference, "
          "architecture: $architecture) {\n       ok msg\n    }\n}\n")
FORGET_BY_ID = ("mutation($image_id: String!) {\n    forget_image_by_id(image_id: $image_id) {\n        ok msg\n"
                "    }\n}\n")

AGENT_INFO = ("query($agent_id: String!) {\n    agent(agent_id: $agent_id) {id status region architecture "
              "first_contact cpu_cur_pct available_slots occupied_slots hardware_metadata live_stat local_config}\n}\n")
AGENT_DETAIL_SDK = ("query($agent_id: String!) {\n    agent(agent_id: $agent_id) {id status scaling_group addr region "
                    "first_contact cpu_cur_pct mem_cur_bytes available_slots occupied_slots local_config}\n}\n")
AGENT_SUMMARY = "query($id: String!) { agent_summary(agent_id: $id) { id status scaling_group available_slots } }"
AGENT_SUMMARY_LIST = ("query { agent_summary_list(limit: 20, offset: 0) { items { id status scaling_group } "
                      "total_count } }")
AGENTS = "query { agents { id addr status } }"

REGISTRIES = "query { container_registries { id hostname config { url type project username password ssl_verify } } }"
REGISTRY = ("query($h: String!) { container_registry(hostname: $h) { hostname config { url username password } } }")
REGISTRY_CREATE = ("mutation($h: String!, $p: CreateContainerRegistryInput!) { create_container_registry("
                   "hostname: $h, props: $p) { container_registry { hostname config { url type password } } } }")
REGISTRY_MODIFY = ("mutation($h: String!, $p: ModifyContainerRegistryInput!) { modify_container_registry("
                   "hostname: $h, props: $p) { container_registry { hostname config { url username password } } } }")
REGISTRY_DELETE = ("mutation($h: String!) { delete_container_registry(hostname: $h) { container_registry "
                   "{ hostname } } }")

REGISTRY_PASSWORD = "registry-password-3e8a0c"
WSPROXY_TOKEN = "wsproxy-token-9f2c1d7e5b3a"


def create_input(**overrides) -> dict:
    """The ``$input`` of ``admin scaling-group add NAME`` with the CLI's defaults."""
    return {"description": "", "is_active": True, "is_public": True, "driver": "static", "scheduler": "fifo",
            "use_host_network": False, "wsproxy_addr": None, "wsproxy_api_token": None, "driver_opts": "{}",
            "scheduler_opts": "{}", **overrides}


data_of = gql_data  # the data of an answer that must have succeeded


def build_world(owner, member, outsider, foreign_admin, superadmin) -> World:
    """Scaling groups, images from three registries, a registry row, an agent:

    * ``default`` (the default domain's), ``sg-private`` (default domain, not public),
      ``sg-other`` (the other domain's), ``sg-kp`` (the owner's keypair only);
    * images: ``bai-test/http:1.0`` (agent-local), ``cr.example.com/team/app:2.0``
      and ``other.io/x/y:1.0``; the other domain allows ``other.io`` only;
    * agent ``node-1`` at ``tcp://10.9.8.7:6001`` in ``default``.
    """
    from django.conf import settings as django_settings

    from accounts.models import Domain, Project
    from agents import services
    from agents.models import ContainerRegistry, Image, ScalingGroup
    from helpers import seed_http_image_and_agent

    default = services.ensure_default_scaling_group()
    default.wsproxy_api_token = WSPROXY_TOKEN
    default.save(update_fields=["wsproxy_api_token"])
    private = ScalingGroup.objects.create(name="sg-private", is_public=False)
    private.domains.add(owner.domain)
    other = ScalingGroup.objects.create(name="sg-other", description="the other domain's")
    other.domains.add(outsider.domain)
    keypair_only = ScalingGroup.objects.create(name="sg-kp")
    keypair_only.keypairs.add(owner.main_keypair)
    seed_http_image_and_agent(default, addr="tcp://10.9.8.7:6001")
    registry = ContainerRegistry.objects.create(registry_name="cr.example.com", url="https://cr.example.com",
                                                username="robot", password=REGISTRY_PASSWORD)
    Image.objects.create(name="cr.example.com/team/app:2.0", registry=registry, registry_name="cr.example.com",
                         repository="team/app", tag="2.0", architecture="x86_64")
    Image.objects.create(name="other.io/x/y:1.0", registry_name="other.io", repository="x/y", tag="1.0",
                         architecture="x86_64")
    Domain.objects.filter(pk=outsider.domain_id).update(allowed_docker_registries=["other.io"])
    project = Project.objects.get(domain_id=owner.domain_id, name="default")
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"project": str(project.pk), "access_key": owner.main_keypair_id},
                 system_secrets=[REGISTRY_PASSWORD, WSPROXY_TOKEN, django_settings.SECRET_KEY])


def groups_state(world=None) -> list:
    """Every scaling group with its settings and associations (what a refused mutation must not change)."""
    from agents.models import ScalingGroup

    return [(g.name, g.description, g.is_active, g.is_public, g.scheduler, g.driver, g.wsproxy_api_token,
             sorted(g.domains.values_list("pk", flat=True)), sorted(str(p) for p in g.projects.values_list("pk", flat=True)),
             sorted(g.keypairs.values_list("pk", flat=True)))
            for g in ScalingGroup.objects.order_by("name")]


def images_state(world=None) -> list:
    from agents.models import ContainerRegistry, Image, ImageAlias
    from backendai.models import BackgroundTask

    return [sorted(Image.objects.values_list("name", "architecture")),
            sorted(ImageAlias.objects.values_list("alias", "image__name")),
            sorted(ContainerRegistry.objects.values_list("registry_name", "url", "username", "password")),
            BackgroundTask.objects.count()]
