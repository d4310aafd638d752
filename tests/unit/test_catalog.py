"""The model catalog: models.json loads, resolves names and snapshots, and its data is self-consistent."""

from __future__ import annotations

import json

import pytest

from imagegw.errors import ModelNotFound
from imagegw.request.catalog import DEFAULT_PATH, GATEWAY_PARAMS, Catalog, CatalogError
from imagegw.request.validation import _check_param

CATALOG = Catalog.load()
SEED_MODELS = ["dall-e-2", "dall-e-3", "gpt-image-1"]
CONTRACT_MODELS = [
    *SEED_MODELS,
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "chatgpt-image-latest",
    "gpt-image-2",
    "gpt-image-2.5",
    "gpt-image-2.6",
]
# The names openai-python 3.57 lists (ImageModel): every one must validate.
SDK_MODELS = [
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-3",
]


def test_every_sdk_model_name_resolves():
    for name in SDK_MODELS:
        assert CATALOG.get(name).name == name


def test_the_sdk_model_list_is_the_one_we_test(monkeypatch):
    import typing

    from openai.types.image_model import ImageModel

    assert set(typing.get_args(ImageModel)) == set(SDK_MODELS)


def test_default_catalog_is_loaded_once():
    assert Catalog.load() is Catalog.load()


def test_every_contract_model_is_in_the_catalog():
    assert set(CONTRACT_MODELS) <= set(CATALOG.names())


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-sunburst"),
        ("gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare"),
        ("gpt-image-2.5-2026-10-01", "gpt-image-2.5"),
        ("gpt-image-2.6-flare-2026-11-02", "gpt-image-2.6-flare"),
        ("gpt-image-2.6-2026-11-02", "gpt-image-2.6"),
    ],
)
def test_dated_snapshots_resolve_by_pattern_and_keep_their_name(name, canonical):
    spec = CATALOG.get(name)
    assert spec.name == name and spec.canonical == canonical
    assert spec.params_for("generations") == CATALOG.get(canonical).params_for("generations")
    assert CATALOG.get(name) is spec  # cached


@pytest.mark.parametrize(
    "name",
    [
        "foo",
        "gpt-image-2-2026",
        "gpt-image-2-latest",
        "DALL-E-3",
        "gpt-image-1-2025-01-01",
        "",
        "gpt-image-2.5-x",
    ],
)
def test_unknown_names_raise_model_not_found(name):
    with pytest.raises(ModelNotFound) as info:
        CATALOG.get(name)
    assert info.value.status == 404 and info.value.param == "model"


def test_gpt_flag_and_default_response_format():
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        assert spec.default_response_format == ("b64_json" if spec.gpt else "url")
    assert not CATALOG.get("dall-e-2").gpt and not CATALOG.get("dall-e-3").gpt
    assert CATALOG.get("gpt-image-1").gpt and CATALOG.get("chatgpt-image-latest").gpt


def test_endpoints():
    assert CATALOG.get("dall-e-2").endpoints == {"generations", "edits", "variations"}
    assert CATALOG.get("dall-e-3").endpoints == {"generations"}
    for name in CONTRACT_MODELS[2:]:
        assert CATALOG.get(name).endpoints == {"generations", "edits"}
    assert CATALOG.serving("variations") == ["dall-e-2", "nova-canvas"]  # nova-canvas: translated


def test_every_model_takes_response_format_user_and_n_on_every_endpoint():
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        for op in spec.endpoints:
            assert {"response_format", "user", "n", "size"} <= spec.params_for(op), (name, op)
            assert spec.param(op, "response_format").default == spec.default_response_format


def test_prompt_is_required_on_generations_and_edits_and_absent_on_variations():
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        for op in spec.endpoints:
            prompt = spec.param(op, "prompt")
            if op == "variations":
                assert prompt is None
            else:
                assert prompt is not None and prompt.required and prompt.max_length


def test_prompt_limits():
    limits = {name: CATALOG.get(name).param("generations", "prompt").max_length for name in CONTRACT_MODELS}
    assert limits["dall-e-2"] == 1000 and limits["dall-e-3"] == 4000
    assert all(limits[name] == 32000 for name in CONTRACT_MODELS[2:])


def test_takes_and_params_for():
    dalle3, gpt1, gpt2 = CATALOG.get("dall-e-3"), CATALOG.get("gpt-image-1"), CATALOG.get("gpt-image-2")
    assert dalle3.takes("generations", "style") and not gpt1.takes("generations", "style")
    assert gpt1.takes("edits", "input_fidelity") and not gpt1.takes("generations", "input_fidelity")
    assert not gpt2.takes("edits", "input_fidelity")
    assert not dalle3.takes("edits", "prompt") and dalle3.params_for("edits") == frozenset()
    assert gpt1.params_for("generations") >= {"background", "moderation", "output_format", "stream"}


def test_extends_merges_per_parameter():
    mini = CATALOG.get("gpt-image-1-mini")
    assert mini.param("edits", "input_fidelity").values == ("low",)
    assert CATALOG.get("gpt-image-1").param("edits", "input_fidelity").values == ("high", "low")
    newest = CATALOG.get("gpt-image-2.6")
    assert {"xhigh", "max"} <= set(newest.param("generations", "quality").values)
    assert {"gif", "svg"} <= set(newest.param("generations", "output_format").values)
    assert newest.takes("generations", "complexity") and not CATALOG.get("gpt-image-2").takes(
        "generations", "complexity"
    )
    assert (
        newest.param("generations", "size").custom
        == CATALOG.get("gpt-image-2").param("generations", "size").custom
    )


def test_sizes_in_the_contract_order():
    assert CATALOG.get("gpt-image-1").param("generations", "size").values == (
        "1024x1024",
        "1024x1536",
        "1536x1024",
        "auto",
    )
    assert CATALOG.get("dall-e-2").param("variations", "size").values == ("256x256", "512x512", "1024x1024")
    rule = CATALOG.get("gpt-image-2").param("generations", "size").custom
    assert rule is not None
    assert (rule.multiple_of, rule.max_aspect_ratio, rule.max_edge, rule.max_pixels) == (
        16,
        3,
        3840,
        3840 * 2160,
    )
    assert CATALOG.get("gpt-image-1").param("generations", "size").custom is None


def test_seed_defaults():
    dalle2, dalle3, gpt1 = CATALOG.get("dall-e-2"), CATALOG.get("dall-e-3"), CATALOG.get("gpt-image-1")
    assert dalle2.param("generations", "quality").default == "standard"
    assert dalle3.param("generations", "style").default == "vivid"
    assert gpt1.param("generations", "size").default == "1024x1024"
    assert gpt1.param("edits", "size").default == "auto"
    assert gpt1.param("edits", "quality").default == "auto"
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        for op in spec.endpoints:
            assert spec.param(op, "n").default == 1
            assert spec.param(op, "size").default in ("1024x1024", "auto")


def test_every_default_is_a_value_its_own_parameter_accepts():
    for name in CATALOG.names():
        spec = CATALOG.get(name)
        for op in spec.endpoints:
            for param in spec.params[op].values():
                if param.default is not None:
                    assert _check_param(param, param.default, text=False) == param.default, (
                        name,
                        op,
                        param.name,
                    )
                for other, allowed in param.requires.items():
                    assert spec.takes(op, other), (name, op, param.name, other)
                    assert allowed


def test_input_limits():
    dalle2 = CATALOG.get("dall-e-2").inputs_for("edits")
    assert dalle2 is not None and dalle2.mask is not None
    assert (dalle2.image.max_count, dalle2.image.formats, dalle2.image.square) == (1, ("png",), True)
    assert dalle2.image.max_bytes == 4 * 1024 * 1024
    assert dalle2.image.modes_without_mask == ("RGBA", "LA", "L")
    variation = CATALOG.get("dall-e-2").inputs_for("variations")
    assert variation is not None and variation.mask is None
    for name in CONTRACT_MODELS[2:]:
        inputs = CATALOG.get(name).inputs_for("edits")
        assert inputs is not None and inputs.mask is not None
        assert inputs.image.max_count == 16 and set(inputs.image.formats) == {"png", "jpeg", "webp"}
        assert inputs.mask.formats == ("png",) and inputs.mask.same_size_as_image
        assert CATALOG.get(name).json_edits
    assert CATALOG.get("dall-e-3").inputs_for("edits") is None


def test_gateway_params_are_parameters_the_catalog_knows():
    known = {
        p
        for name in CATALOG.names()
        for op in ("generations", "edits")
        for p in CATALOG.get(name).params_for(op)
    }
    assert known >= GATEWAY_PARAMS
    assert "user" not in GATEWAY_PARAMS and "response_format" in GATEWAY_PARAMS


def test_default_models_exist():
    assert CATALOG.default_model == "dall-e-2" and CATALOG.gpt_default_model == "gpt-image-1"


def test_a_new_model_is_just_an_entry(tmp_path):
    data = json.loads(DEFAULT_PATH.read_text())
    data["models"]["acme-image-9"] = {
        "extends": "gpt-image-2",
        "snapshot_pattern": r"acme-image-9-\d{4}",
        "params": {"seed": {"type": "integer", "min": 0, "max": 2**31}},
    }
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    catalog = Catalog.load(str(path))
    assert catalog is not Catalog.load()
    spec = catalog.get("acme-image-9-2027")
    assert spec.canonical == "acme-image-9" and spec.takes("edits", "seed")
    # identity is not inherited: gpt-image-2's snapshot pattern still resolves to gpt-image-2
    assert catalog.get("gpt-image-2-2026-04-21").canonical == "gpt-image-2"


@pytest.mark.parametrize(
    ("models", "defaults"),
    [
        ({}, {}),
        ({"a": {"extends": "b"}, "b": {"extends": "a"}}, {"model": "a", "gpt_model": "a"}),
        ({"a": {"extends": "nope"}}, {"model": "a", "gpt_model": "a"}),
        (
            {
                "a": {
                    "gpt": False,
                    "endpoints": ["generations"],
                    "default_response_format": "url",
                    "params": {},
                }
            },
            {"model": "missing", "gpt_model": "a"},
        ),
        (
            {
                "a": {
                    "gpt": False,
                    "endpoints": ["generations"],
                    "default_response_format": "url",
                    "params": {"x": {"type": "complex"}},
                }
            },
            {"model": "a", "gpt_model": "a"},
        ),
        (
            {
                "a": {
                    "gpt": False,
                    "endpoints": ["generations"],
                    "default_response_format": "url",
                    "params": {"x": {"type": "string", "endpoints": ["edits"]}},
                }
            },
            {"model": "a", "gpt_model": "a"},
        ),
        ({"a": {"endpoints": ["generations"], "params": {}}}, {"model": "a", "gpt_model": "a"}),
    ],
)
def test_malformed_catalogs_fail_at_load(models, defaults):
    with pytest.raises(CatalogError):
        Catalog.from_dict({"models": models, "defaults": defaults})
