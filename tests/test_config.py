"""Config validation: one clear error naming the key path, the value and what is allowed."""

from __future__ import annotations

import pytest

from mlflow_xai.config import AuditConfig, load_config
from mlflow_xai.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"methods": {"integrated_gradients": {"n_steps": "50"}}},
            "methods.integrated_gradients.n_steps must be an integer >= 1",
        ),
        (
            {"methods": {"integrated_gradients": {"n_steps": 0}}},
            "methods.integrated_gradients.n_steps must be an integer >= 1",
        ),
        (
            {"methods": {"integrated_gradients": {"n_step": 5}}},
            "unknown key 'n_step' in methods.integrated_gradients; valid keys: ",
        ),
        ({"method": {}}, "unknown key 'method'; valid keys: artifacts, batch_size, checks"),
        ({"methods": {"integrated_gradient": {}}}, "unknown key 'integrated_gradient' in methods"),
        (
            {"methods": {"integrated_gradients": {"rule": "simpson"}}},
            "methods.integrated_gradients.rule must be one of 'left', 'right', 'midpoint', 'trapezoid', "
            "'gauss_legendre', got \"simpson\"",
        ),
        (
            {"target": "best"},
            "target: must be predicted, label, a class index >= 0, a list of these, or {top: k} with k >= 1; "
            "got 'best'",
        ),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"output": "softmax"}, "output must be one of 'logit', 'probability', 'log_probability'"),
        (
            {"checks": {"completeness": {"tolerance": -0.1}}},
            "checks.completeness.tolerance must be a number >= 0.0, got -0.1",
        ),
        ({"methods": {"occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [1, 1]}}}, "same length"),
        ({"methods": {}}, "methods must enable at least one method"),
    ],
)
def test_bad_config_gets_one_clear_error(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="config must be a mapping of keys to values, got list"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_cannot_construct_python_objects(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("methods:\n  occlusion:\n  integrated_gradients:\n    n_steps: 8\n")
    cfg = load_config(path, methods={"integrated_gradients": {"rule": "midpoint"}})
    assert isinstance(cfg, AuditConfig)
    assert cfg.methods.integrated_gradients.n_steps == 8
    assert cfg.methods.integrated_gradients.rule == "midpoint"
    assert cfg.methods.occlusion is not None


@pytest.mark.parametrize(
    "source",
    [
        None,
        *sorted(str(p) for p in __import__("pathlib").Path(__file__).parents[1].glob("configs/*.yaml")),
        {"methods": {"integrated_gradients": {"baseline": {"kind": "uniform", "low": -1.0}}}},
        {"methods": {"kernel_shap": {"feature_mask": {"kind": "superpixel", "n_segments": 9}}}},
    ],
)
def test_logged_config_loads_back_to_the_same_config(source):
    """xai/config.yaml is written with dump_config: it must reproduce the audit's config."""
    import yaml

    from mlflow_xai.config import dump_config

    config = load_config(source)
    assert load_config(yaml.safe_load(dump_config(config))) == config


def test_the_methods_section_is_the_registry_of_parameter_models():
    """One name per method in three places that must agree: the parameter registry, the config's
    methods section (same order, each field that method's model or null) and the adapters."""
    import typing

    from mlflow_xai.attribution.methods import registered
    from mlflow_xai.attribution.parameters import PARAMETERS
    from mlflow_xai.config import MethodsConfig

    fields = MethodsConfig.model_fields
    assert list(fields) == list(PARAMETERS)
    for name, model in PARAMETERS.items():
        assert set(typing.get_args(fields[name].annotation)) == {model, type(None)}, name
        assert fields[name].default is None
    assert set(registered()) == set(PARAMETERS)


def test_the_parameter_registry_refuses_a_name_twice():
    from mlflow_xai.attribution.parameters import SaliencyConfig, parameter_registry

    assert list(parameter_registry([("a", SaliencyConfig), ("b", SaliencyConfig)])) == ["a", "b"]
    with pytest.raises(ValueError, match="'a' has two parameter models"):
        parameter_registry([("a", SaliencyConfig), ("a", SaliencyConfig)])
