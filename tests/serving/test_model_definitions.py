"""Model definitions: Backend.AI's YAML format, normalised, with errors that name the field."""
import pytest

from backendai.api import errors
from serving.services import definitions

from .serving_core_support import DEFINITION


def test_a_valid_definition_is_normalised():
    result = definitions.parse_definition(DEFINITION)
    assert result == {
        "name": "echo", "model_path": "/models", "start_command": "python3 -m http.server 8000", "port": 8000,
        "health_check": {"path": "/health", "interval": 2.0, "timeout": 2.0, "threshold": 3, "initial_delay": 0.0,
                         "expected_status": 200},
    }


def test_a_string_start_command_is_kept_and_an_absent_one_means_the_image_command():
    text = ("models:\n  - name: m\n    model_path: /models\n    service:\n"
            "      start_command: ./serve --port 9000\n      port: 9000\n")
    assert definitions.parse_definition(text)["start_command"] == "./serve --port 9000"
    without = "models:\n  - name: m\n    model_path: /models\n    service:\n      port: 9000\n"
    result = definitions.parse_definition(without)
    assert result["start_command"] is None
    assert result["health_check"] == {"path": "/", **definitions.HEALTH_DEFAULTS}


def test_only_the_first_model_is_served():
    text = DEFINITION + "  - name: second\n    model_path: /other\n    service: {port: 9000}\n"
    assert definitions.parse_definition(text)["name"] == "echo"


S = "models:\n  - name: m\n    model_path: /models\n    service: "
BAD = [
    ("", "(file): is empty"),
    ("models: [", "is not valid YAML at line"),
    ("- just a list", "(top level): must be a mapping"),
    ("other: 1", "models: is required"),
    ("models: []", "models: must be a non-empty list"),
    ("models: [3]", "models[0]: must be a mapping"),
    ("models:\n  - model_path: /models\n    service: {port: 8000}", "models[0].name: is required"),
    ("models:\n  - name: m\n    service: {port: 8000}", "models[0].model_path: is required"),
    ("models:\n  - name: m\n    model_path: models\n    service: {port: 8000}",
     "models[0].model_path: must be an absolute"),
    ("models:\n  - name: m\n    model_path: /a/../b\n    service: {port: 8000}",
     "models[0].model_path: must not contain '..'"),
    ("models:\n  - name: m\n    model_path: /models", "models[0].service: is required"),
    (S + "{}", "models[0].service.port: is required"),
    (S + "{port: '8000'}", "models[0].service.port: must be an integer"),
    (S + "{port: 70000}", "models[0].service.port: must be between 1 and 65535"),
    (S + "{port: 2200}", "models[0].service.port: 2200 is reserved"),
    (S + "{port: 8000, start_command: []}",
     "models[0].service.start_command: must not be an empty list"),
    (S + "{port: 8000, start_command: [python, 3]}",
     "models[0].service.start_command[1]: must be a string"),
    (S + "{port: 8000, start_command: {a: b}}",
     "models[0].service.start_command: must be a list of strings or a string"),
    (S + "{port: 8000, health_check: yes}",
     "models[0].service.health_check: must be a mapping"),
    (S + "{port: 8000, health_check: {path: health}}",
     "models[0].service.health_check.path: must be a URL path"),
    (S + "{port: 8000, health_check: {interval: 0}}",
     "models[0].service.health_check.interval: must be between"),
    (S + "{port: 8000, health_check: {max_retries: 1.5}}",
     "models[0].service.health_check.max_retries: must be a whole number"),
    (S + "{port: 8000, health_check: {expected_status_code: 99}}",
     "models[0].service.health_check.expected_status_code: must be between 100 and 599"),
    (S + "{port: 8000, health_check: {max_wait_time: fast}}",
     "models[0].service.health_check.max_wait_time: must be a number"),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_each_malformed_definition_is_refused_naming_the_field(text, expected):
    with pytest.raises(errors.InvalidAPIParameters) as caught:
        definitions.parse_definition(text, source="def.yaml")
    assert caught.value.msg.startswith("model definition (def.yaml): ")
    assert expected in caught.value.msg


def test_a_definition_larger_than_the_cap_is_refused():
    text = DEFINITION + "#" * definitions.MAX_DEFINITION_BYTES
    with pytest.raises(errors.InvalidAPIParameters, match="larger than"):
        definitions.parse_definition(text)


def test_a_definition_that_is_not_utf8_is_refused():
    with pytest.raises(errors.InvalidAPIParameters, match="not UTF-8"):
        definitions.parse_definition(b"models: \xff\xfe")


def test_yaml_tags_that_build_objects_are_refused():
    with pytest.raises(errors.InvalidAPIParameters, match="not valid YAML"):
        definitions.parse_definition("models: !!python/object/apply:os.system ['true']")


def test_the_runtimes_list_names_custom_and_the_presets():
    names = [r["name"] for r in definitions.runtimes()]
    assert names[0] == "custom"
    assert {"vllm", "huggingface-tgi", "nim", "cmd"} <= set(names)
    assert all(r["human_readable_name"] for r in definitions.runtimes())


def test_an_unknown_runtime_is_refused():
    with pytest.raises(errors.InvalidAPIParameters, match="runtime_variant: unknown runtime 'tensorflow'"):
        definitions.check_runtime("tensorflow")


def test_a_preset_runtime_gives_its_own_definition():
    result = definitions.preset_definition(definitions.RUNTIMES["vllm"], image=None)
    assert result["port"] == 8000 and result["start_command"] is None
    assert result["health_check"]["path"] == "/health"


def test_the_cmd_runtime_serves_on_the_image_port(db):
    from agents.models import Image

    image = Image(name="x/y:1", service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    assert definitions.preset_definition(definitions.RUNTIMES["cmd"], image)["port"] == 8080
    bare = Image(name="x/z:1", service_ports=[])
    with pytest.raises(errors.InvalidAPIParameters, match="declares no inference service port"):
        definitions.preset_definition(definitions.RUNTIMES["cmd"], bare)


@pytest.mark.parametrize("raw,expected", [("", ""), (None, ""), ("defs/model.yaml", "defs/model.yaml"),
                                          ("/defs/./m.yml", "defs/m.yml")])
def test_definition_paths_are_cleaned(raw, expected):
    assert definitions.clean_definition_path(raw) == expected


@pytest.mark.parametrize("raw", ["../x.yaml", "a/../../b", 3, "a\\b", "/"])
def test_definition_paths_outside_the_folder_are_refused(raw):
    with pytest.raises(errors.InvalidAPIParameters, match="config.model_definition_path"):
        definitions.clean_definition_path(raw)
