"""Creating an endpoint: Backend.AI's create body, every check before anything is written."""
import pytest

from backendai.api import errors
from serving.models import Endpoint, EndpointEvent, LifecycleStage, Routing
from serving.services import endpoints


def counts():
    return Endpoint.objects.count(), Routing.objects.count(), EndpointEvent.objects.count()


def test_it_creates_an_endpoint_with_the_definition_of_the_model_folder(owner, cluster, model, body):
    endpoint = endpoints.create_endpoint(owner, owner.main_keypair, body(replicas=2))
    endpoint.refresh_from_db()
    assert endpoint.name == "echo-svc" and endpoint.replicas == 2
    assert endpoint.session_owner == owner and endpoint.created_user == owner
    assert endpoint.owner_keypair == owner.main_keypair
    assert endpoint.model == model and endpoint.model_mount_destination == "/models"
    assert endpoint.image == "bai-test/http:1.0" and endpoint.resource_group_id == "default"
    assert endpoint.model_definition["port"] == 8000
    assert endpoint.model_definition["health_check"]["path"] == "/health"
    assert endpoint.lifecycle_stage == LifecycleStage.CREATED
    assert endpoint.token_secret and len(endpoint.token_secret) >= 32
    assert endpoint.events.filter(kind="info").exists()


def test_the_23_09_body_names_are_taken_too(owner, cluster, model, body):
    data = body()
    data["name"] = data.pop("service_name")
    data["desired_session_count"] = data.pop("replicas")
    endpoint = endpoints.create_endpoint(owner, owner.main_keypair, data)
    assert endpoint.name == "echo-svc" and endpoint.replicas == 1


def test_a_dry_run_checks_everything_and_writes_nothing(owner, cluster, model, body):
    before = counts()
    endpoint = endpoints.create_endpoint(owner, owner.main_keypair, body(), dry_run=True)
    assert endpoint.pk is not None and endpoint.model_definition["port"] == 8000
    assert counts() == before


def test_a_definition_at_another_path_is_read(owner, cluster, make_model, body):
    folder = make_model(owner, name="other-model", path="defs/serve.yml")
    endpoint = endpoints.create_endpoint(owner, owner.main_keypair, body(**{
        "config.model": str(folder.pk), "config.model_definition_path": "defs/serve.yml"}))
    assert endpoint.model_definition_path == "defs/serve.yml"
    assert endpoint.model_definition["name"] == "echo"


def test_a_preset_runtime_needs_no_definition_file(owner, cluster, make_model, body):
    folder = make_model(owner, name="weights", definition=None)
    endpoint = endpoints.create_endpoint(owner, owner.main_keypair, body(**{
        "runtime_variant": "vllm", "config.model": str(folder.pk)}))
    assert endpoint.runtime_variant == "vllm" and endpoint.model_definition["port"] == 8000


def refused(actor, data, error=errors.InvalidAPIParameters, match=None):
    before = counts()
    with pytest.raises(error) as caught:
        endpoints.create_endpoint(actor, actor.main_keypair, data)
    assert 400 <= caught.value.status_code < 500
    if match:
        assert match in (caught.value.msg or ""), caught.value.msg
    assert counts() == before
    return caught.value


@pytest.mark.parametrize("override,match", [
    ({"runtime_variant": "tensorflow"}, "runtime_variant: unknown runtime"),
    ({"replicas": -1}, "replicas: must be between 0 and 64"),
    ({"replicas": 65}, "replicas: must be between 0 and 64"),
    ({"replicas": True}, "replicas: must be an integer"),
    ({"replicas": "many"}, "replicas: must be an integer"),
    ({"service_name": "x"}, "service_name:"),
    ({"service_name": "bad name!"}, "service_name:"),
    ({"service_name": "n" * 60}, "service_name: must be at most 55"),
    ({"service_name": None}, "service_name: is required"),
    ({"image": None}, "image: is required"),
    ({"open_to_public": "yes"}, "open_to_public: must be true or false"),
    ({"cluster_size": 0}, "cluster_size"),
    ({"cluster_mode": "galaxy"}, "cluster_mode"),
    ({"config.resources": {"cpu": "lots"}}, "config.resources"),
    ({"config.resources": {"cpu": "1", "mem": "1m"}}, "needs at least"),
    ({"config.environ": {"1BAD": "x"}}, "config.environ"),
    ({"config.model_mount_destination": "relative"}, "config.model_mount_destination: must be an absolute path"),
    ({"config.model_mount_destination": "/home/work"}, "reserved"),
    ({"config.model_definition_path": "../escape.yaml"}, "config.model_definition_path"),
    ({"config.model": None}, "config.model: is required"),
    ({"config.extra_mounts": {"not-a-uuid": {}}}, "must be keyed by a folder id"),
    ({"config.extra_mounts": [1]}, "config.extra_mounts[0]"),
    ({"config": "nope"}, "config: must be an object"),
])
def test_each_bad_input_is_refused_and_nothing_is_created(owner, cluster, model, body, override, match):
    refused(owner, body(**override), match=match)


def test_an_unknown_image_is_refused(owner, cluster, model, body):
    exc = refused(owner, body(image="nosuch/image:9"), error=errors.BackendAIError)
    assert exc.status_code in (400, 404)


def test_a_folder_without_a_definition_is_refused(owner, cluster, make_model, body):
    folder = make_model(owner, name="empty-model", definition=None)
    refused(owner, body(**{"config.model": str(folder.pk)}),
            match="has no model-definition.yaml or model-definition.yml")


def test_a_malformed_definition_is_refused_naming_the_field(owner, cluster, make_model, body):
    folder = make_model(owner, name="bad-model", definition="models:\n  - name: m\n    model_path: /models\n"
                                                             "    service: {port: nope}\n")
    refused(owner, body(**{"config.model": str(folder.pk)}),
            match="model definition (model-definition.yaml): models[0].service.port: must be an integer")


def test_a_definition_too_large_is_refused(owner, cluster, make_model, body):
    folder = make_model(owner, name="huge-model", definition="#" * (64 * 1024 + 10))
    refused(owner, body(**{"config.model": str(folder.pk)}), match="larger than")


def test_a_folder_that_is_not_a_model_folder_is_refused(owner, cluster, make_model, body):
    folder = make_model(owner, name="plain", usage_mode="general")
    refused(owner, body(**{"config.model": str(folder.pk)}), match="is not a model folder")


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_someone_elses_model_folder_is_not_found(owner, member, outsider, cluster, make_model, body, who):
    other = {"member": member, "outsider": outsider}[who]
    folder = make_model(other, name="theirs")
    refused(owner, body(**{"config.model": str(folder.pk)}), error=errors.ObjectNotFound)


def test_someone_elses_folder_as_an_extra_mount_is_not_found(owner, member, cluster, make_model, body):
    folder = make_model(member, name="their-data", usage_mode="general", definition=None)
    refused(owner, body(**{"config.extra_mounts": {str(folder.pk): {"mount_destination": "/data"}}}),
            error=errors.ObjectNotFound)


def test_an_extra_mount_over_the_model_mount_is_refused(owner, cluster, make_model, body):
    folder = make_model(owner, name="mydata", usage_mode="general", definition=None)
    refused(owner, body(**{"config.extra_mounts": {str(folder.pk): {"mount_destination": "/models/x"}}}),
            match="overlaps")


def test_a_second_live_service_with_the_same_name_is_refused(owner, cluster, model, body):
    endpoints.create_endpoint(owner, owner.main_keypair, body())
    refused(owner, body(), match="already exists")


def test_a_destroyed_services_name_can_be_used_again(owner, cluster, model, body):
    first = endpoints.create_endpoint(owner, owner.main_keypair, body())
    Endpoint.objects.filter(pk=first.pk).update(lifecycle_stage=LifecycleStage.DESTROYED)
    second = endpoints.create_endpoint(owner, owner.main_keypair, body())
    assert second.pk != first.pk


def test_only_admins_create_for_another_keypair(owner, member, cluster, model, body):
    refused(member, body(owner_access_key=owner.main_keypair.access_key), error=errors.InsufficientPrivilege)


def test_a_scaling_group_that_refuses_inference_sessions_is_refused(owner, cluster, model, body):
    group = cluster[0]
    group.scheduler_opts = {**group.scheduler_opts, "allowed_session_types": ["interactive"]}
    group.save()
    refused(owner, body(), match="does not accept inference sessions")
