"""Reference TinyLLaVA-Video checkpoint layout: loading, checks, saving, conversion, tokenizer.

The reference folders here are written BY HAND (key names, config.json fields and shard/index
files as documented in the spec §2), independently of `tinyvr.model.reference`'s own writer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tinyvr.constants import IMAGE_TOKEN_INDEX
from tinyvr.errors import CheckpointError, ConfigError

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the user's questions.")
ROPE_THETA = 1_000_000.0  # not the Qwen2Config default: proves the legacy rope_theta key is read
NUM_FRAMES = 16  # the reference hard-codes 16 frames, 8 heads × 64, FF ×4


# ---------------------------------------------------------------------------------------------
# helpers: a reference folder written by hand


def manual_reference_key(key: str) -> str:
    """tinyvr key -> reference key, written out here independently of the module under test."""
    if key.startswith("vision_tower."):
        return "vision_tower._vision_tower.vision_model." + key[len("vision_tower."):]
    if key.startswith("connector."):
        return "connector._connector." + key[len("connector."):]
    assert key.startswith("language_model.")
    return key


def reference_config_json(cfg) -> dict:
    """config.json as transformers 4.49 + TinyLlavaConfig would write it (spec §2.3)."""
    t, v = cfg.text_config, cfg.vision_config
    return {
        "_name_or_path": "Zhang199/TinyLLaVA-Video-Coldstart_NextQA_16",
        "architectures": ["TinyLlavaForConditionalGeneration"],
        "cache_dir": None,
        "connector_type": "groupresampler",
        "group": cfg.group,
        "hidden_size": t.hidden_size,
        "ignore_index": -100,
        "image_aspect_ratio": "square",
        "image_token_index": -200,
        "llm_model_name_or_path": "Qwen/Qwen2.5-3B",
        "model_type": "tinyllava",
        "num_queries": cfg.num_queries,
        "num_resampler_layers": cfg.resampler_depth,
        "pad_token": "<|endoftext|>",
        "resampler_hidden_size": 768,
        "text_config": {
            "_attn_implementation_autoset": True,
            "_name_or_path": "Qwen/Qwen2.5-3B",
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": t.eos_token_id,
            "eos_token_id": t.eos_token_id,
            "hidden_act": "silu",
            "hidden_size": t.hidden_size,
            "initializer_range": t.initializer_range,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "max_window_layers": t.num_hidden_layers,
            "model_type": "qwen2",
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_scaling": None,
            "rope_theta": ROPE_THETA,
            "sliding_window": t.max_position_embeddings,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "use_cache": True,
            "use_mrope": False,
            "use_sliding_window": False,
            "vocab_size": t.vocab_size,
        },
        "tokenizer_model_max_length": 3072,
        "tokenizer_name_or_path": "Qwen/Qwen2.5-3B",
        "tokenizer_padding_side": "right",
        "tokenizer_use_fast": False,
        "torch_dtype": "float32",
        "tune_type_connector": "full",
        "tune_type_llm": "full",
        "tune_type_vision_tower": "frozen",
        "tune_vision_tower_from_layer": 0,
        "use_cache": True,
        "vision_config": {
            "hidden_act": v.hidden_act,
            "hidden_size": v.hidden_size,
            "image_size": v.image_size,
            "intermediate_size": v.intermediate_size,
            "layer_norm_eps": v.layer_norm_eps,
            "model_name_or_path": "google/siglip-so400m-patch14-384",
            "model_name_or_path2": "",
            "model_type": "siglip_vision_model",
            "num_attention_heads": v.num_attention_heads,
            "num_hidden_layers": v.num_hidden_layers,
            "patch_size": v.patch_size,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "patch",
        "vision_hidden_size": v.hidden_size,
        "vision_model_name_or_path": "google/siglip-so400m-patch14-384",
        "vision_model_name_or_path2": "",
        "vocab_size": t.vocab_size,
    }


def write_reference(folder: Path, tensors: dict, cfg_json: dict, tokenizer=None, shards: int = 2) -> Path:
    """Write `tensors` as `shards` safetensors files (+ index when > 1), config.json and the tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    else:
        weight_map = {}
        size = -(-len(names) // shards)
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = names[i * size:(i + 1) * size]
            save_file({n: tensors[n].contiguous() for n in part}, str(folder / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(cfg_json, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": cfg_json["text_config"]["bos_token_id"],
         "eos_token_id": cfg_json["text_config"]["eos_token_id"], "use_cache": False}))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def logits(model, ids, pixel_values):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixel_values).logits


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tokenizer():
    from tinyvr.data.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def ref_config(tokenizer):
    """A tiny config within what the reference can express (8 heads × 64, FF ×4, 16 frames)."""
    from tinyvr.model import build_config

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return build_config(
        "tiny", vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=eos,
        text_config={"initializer_range": 0.2, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA}},
        resampler_heads=8, resampler_head_dim=64, resampler_ff_mult=4, num_frames=NUM_FRAMES,
    )


@pytest.fixture(scope="module")
def source_model(ref_config):
    from tinyvr.model import TinyVideoForConditionalGeneration

    torch.manual_seed(0)
    model = TinyVideoForConditionalGeneration(ref_config).eval()
    with torch.no_grad():  # non-trivial norms / biases, so a mix-up of tensors shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def ref_tensors(source_model):
    """The reference state dict, without lm_head (tied; safetensors de-duplicates it)."""
    return {manual_reference_key(k): v.clone() for k, v in source_model.state_dict().items()
            if k != "language_model.lm_head.weight"}


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory, ref_tensors, ref_config, tokenizer):
    return write_reference(tmp_path_factory.mktemp("ref") / "TinyLLaVA-Video-R1", ref_tensors,
                           reference_config_json(ref_config), tokenizer)


@pytest.fixture(scope="module")
def inputs(source_model, tokenizer):
    from tinyvr.data.processor import Processor

    proc = Processor(tokenizer, image_size=source_model.config.vision_config.image_size, num_frames=NUM_FRAMES)
    ids = torch.tensor([proc.encode_prompt("Which shape moves first?")])
    g = torch.Generator().manual_seed(3)
    size = source_model.config.vision_config.image_size
    return ids, torch.rand(1, NUM_FRAMES, 3, size, size, generator=g) * 2 - 1


def variant(tmp_path, ref_tensors, ref_config, tokenizer, *, drop=(), add=None, replace=None, shards=2):
    tensors = {k: v for k, v in ref_tensors.items() if k not in drop}
    tensors.update(add or {})
    tensors.update(replace or {})
    return write_reference(tmp_path / "ckpt", tensors, reference_config_json(ref_config), tokenizer, shards)


# ---------------------------------------------------------------------------------------------
# keys and config


def test_documented_reference_keys_and_shapes(ref_tensors, ref_config):
    d, c = ref_config.text_config.hidden_size, ref_config.vision_config.hidden_size
    latents = ref_config.num_queries // ref_config.group
    expected = {
        "connector._connector.latents": [latents, d],
        "connector._connector.linear.weight": [d, c],
        "connector._connector.linear.bias": [d],
        "connector._connector.layers.0.0.to_q.weight": [512, d],
        "connector._connector.layers.0.0.to_kv.weight": [1024, d],
        "connector._connector.layers.0.0.to_out.weight": [d, 512],
        "connector._connector.layers.0.0.norm_media.weight": [d],
        "connector._connector.layers.0.0.norm_latents.bias": [d],
        "connector._connector.layers.0.1.0.weight": [d],
        "connector._connector.layers.0.1.1.weight": [4 * d, d],
        "connector._connector.layers.0.1.3.weight": [d, 4 * d],
        "connector._connector.norm.weight": [d],
        "vision_tower._vision_tower.vision_model.embeddings.patch_embedding.weight": [c, 3, 8, 8],
        "vision_tower._vision_tower.vision_model.embeddings.position_embedding.weight": [64, c],
        "vision_tower._vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": [c, c],
        "vision_tower._vision_tower.vision_model.post_layernorm.weight": [c],
        "vision_tower._vision_tower.vision_model.head.probe": [1, 1, c],
        "vision_tower._vision_tower.vision_model.head.attention.in_proj_weight": [3 * c, c],
        "language_model.model.embed_tokens.weight": [ref_config.text_config.vocab_size, d],
        "language_model.model.layers.0.self_attn.k_proj.bias": [128],
        "language_model.model.norm.weight": [d],
    }
    for key, shape in expected.items():
        assert list(ref_tensors[key].shape) == shape, key
    assert not any("position_ids" in k or "inv_freq" in k or "position_encoding" in k for k in ref_tensors)


def test_key_maps_are_inverse(ref_tensors):
    from tinyvr.model.reference import map_reference_key, map_tinyvr_key

    assert map_reference_key("vision_tower._vision_tower.vision_model.head.probe") == "vision_tower.head.probe"
    assert map_reference_key("connector._connector.layers.2.1.3.weight") == "connector.layers.2.1.3.weight"
    assert map_reference_key("language_model.lm_head.weight") == "language_model.lm_head.weight"
    assert map_reference_key("_connector.latents") == "connector.latents"  # legacy connector file
    assert map_tinyvr_key("vision_tower.encoder.layers.0.mlp.fc1.bias") == \
        "vision_tower._vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"
    for key in ref_tensors:
        assert map_tinyvr_key(map_reference_key(key)) == key
    with pytest.raises(CheckpointError, match="model.embed_tokens.weight"):
        map_reference_key("model.embed_tokens.weight")


def test_reference_to_config_fields_and_defaults(ref_config):
    from tinyvr.model.reference import SIGLIP_SO400M, reference_to_config

    cfg = reference_to_config(reference_config_json(ref_config))
    assert (cfg.group, cfg.num_queries, cfg.resampler_depth) == (8, 64, 1)
    assert (cfg.resampler_heads, cfg.resampler_head_dim, cfg.resampler_ff_mult, cfg.num_frames) == (8, 64, 4, 16)
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy, cfg.image_token_index) == (-2, "patch", -200)
    assert cfg.text_config.rope_parameters["rope_theta"] == ROPE_THETA
    assert cfg.eos_token_id == cfg.pad_token_id == ref_config.eos_token_id

    minimal = reference_config_json(ref_config)
    for key in ("vision_config", "vision_feature_layer", "vision_feature_select_strategy", "num_resampler_layers"):
        minimal.pop(key)
    cfg = reference_to_config(minimal)
    assert cfg.vision_config.hidden_size == SIGLIP_SO400M["hidden_size"] == 1152
    assert (cfg.vision_config.num_hidden_layers, cfg.vision_config.image_size, cfg.vision_config.patch_size) == (27, 384, 14)
    assert (cfg.resampler_depth, cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == (3, -2, "patch")
    assert cfg.patches_per_frame == 728

    for field in ("group", "num_queries", "text_config"):
        broken = reference_config_json(ref_config)
        broken.pop(field)
        with pytest.raises(ConfigError, match=field):
            reference_to_config(broken)
    broken = reference_config_json(ref_config)
    broken["connector_type"] = "mlp2x_gelu"
    with pytest.raises(ConfigError, match="mlp2x_gelu"):
        reference_to_config(broken)


def test_is_reference_folder(ref_dir, tmp_path):
    from tinyvr.model.reference import is_reference_folder

    assert is_reference_folder(ref_dir)
    assert not is_reference_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not is_reference_folder(tmp_path)


# ---------------------------------------------------------------------------------------------
# loading


def test_load_reference_matches_tinyvr_model(ref_dir, source_model, inputs):
    from tinyvr.model.reference import load_reference

    model, processor = load_reference(ref_dir)
    ids, pixels = inputs
    assert torch.equal(logits(model, ids, pixels), logits(source_model, ids, pixels))
    assert not model.training
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.connector.parameters())
    # lm_head absent from the checkpoint: tied to embed_tokens
    lm = model.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    sd_a, sd_b = model.state_dict(), source_model.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # processor from the folder's own tokenizer files, with the reference's video settings
    assert (processor.image_size, processor.num_frames, processor.max_length) == (64, 16, 3072)
    assert processor.encode_prompt("Which shape moves first?") == ids[0].tolist()


def test_load_reference_dtype_and_attention(ref_dir, source_model, inputs):
    from tinyvr.model.reference import load_reference

    model, _ = load_reference(ref_dir, dtype=torch.bfloat16, attn_implementation="eager")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.language_model.config._attn_implementation == "eager"
    assert model.connector.position_encoding.table.abs().sum() > 0  # buffer computed, not left empty
    model, _ = load_reference(ref_dir, dtype="auto")
    assert next(model.parameters()).dtype == torch.float32


def test_lm_head_present_single_file(tmp_path, ref_tensors, ref_config, tokenizer, source_model, inputs):
    from tinyvr.model.reference import load_reference

    head = {"language_model.lm_head.weight": ref_tensors["language_model.model.embed_tokens.weight"].clone()}
    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer, add=head, shards=1)
    assert (folder / "model.safetensors").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # equal to embed_tokens: no warning
        model, _ = load_reference(folder)
    assert torch.equal(logits(model, *inputs), logits(source_model, *inputs))
    assert model.language_model.lm_head.weight is model.language_model.model.embed_tokens.weight


def test_missing_key_is_named(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer, drop=["connector._connector.latents"])
    with pytest.raises(CheckpointError, match=r"missing key\(s\): connector\._connector\.latents"):
        load_reference(folder)
    with pytest.warns(UserWarning, match="connector._connector.latents"):
        model, _ = load_reference(folder, strict=False)
    assert torch.isfinite(model.connector.latents).all() and model.connector.latents.std() > 0.5  # unit normal


def test_unexpected_key_is_named(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    extra = {"connector._connector.extra.weight": torch.zeros(3), "mm_projector.weight": torch.zeros(2)}
    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer, add=extra)
    with pytest.raises(CheckpointError) as err:
        load_reference(folder)
    assert "connector._connector.extra.weight" in str(err.value) and "mm_projector.weight" in str(err.value)
    assert "2 unexpected" in str(err.value)
    with pytest.warns(UserWarning, match="mm_projector.weight"):
        load_reference(folder, strict=False)


def test_wrong_shape_names_key_and_shapes(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    bad = {"connector._connector.linear.weight": torch.zeros(256, 100)}
    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer, replace=bad)
    for strict in (True, False):
        with pytest.raises(CheckpointError) as err:
            load_reference(folder, strict=strict)
        msg = str(err.value)
        assert "connector._connector.linear.weight" in msg and "[256, 100]" in msg and "[256, 128]" in msg


def test_missing_shard_is_named(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer, shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors"):
        load_reference(folder)
    (folder / "model.safetensors.index.json").unlink()  # shards without index: the set must be complete
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors"):
        load_reference(folder)


def test_index_lists_tensor_absent_from_shard(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    folder = variant(tmp_path, ref_tensors, ref_config, tokenizer)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["connector._connector.norm.weight"] = "model-00001-of-00002.safetensors"
    index["weight_map"]["language_model.model.norm.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not in their shard"):
        load_reference(folder)


def test_pickle_weights_refused_unless_allowed(tmp_path, ref_tensors, ref_config, tokenizer, source_model, inputs):
    from tinyvr.model.reference import load_reference

    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(dict(ref_tensors), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(reference_config_json(ref_config)))
    tokenizer.save_pretrained(str(folder))
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_reference(folder)
    model, _ = load_reference(folder, allow_pickle=True)
    assert torch.equal(logits(model, *inputs), logits(source_model, *inputs))


def test_bad_folders(tmp_path, ref_config):
    from tinyvr.model.reference import load_reference

    with pytest.raises(CheckpointError, match="not found"):
        load_reference(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps(reference_config_json(ref_config)))
    with pytest.raises(CheckpointError, match="no weights found"):
        load_reference(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(CheckpointError, match="'llava'"):
        load_reference(tmp_path)


def test_config_without_group_names_folder_and_field(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    cfg = reference_config_json(ref_config)
    del cfg["group"]
    folder = write_reference(tmp_path / "ckpt", ref_tensors, cfg, tokenizer)
    with pytest.raises(ConfigError, match=r"config\.json: field 'group' is missing") as err:
        load_reference(folder)
    assert str(folder) in str(err.value)


def test_tokenizer_dir_and_missing_tokenizer(tmp_path, ref_tensors, ref_config, tokenizer):
    from tinyvr.model.reference import load_reference

    folder = write_reference(tmp_path / "no_tok", ref_tensors, reference_config_json(ref_config), None)
    with pytest.raises(CheckpointError, match="tokenizer_dir"):
        load_reference(folder)
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(str(tok_dir))
    _, processor = load_reference(folder, tokenizer_dir=tok_dir)
    assert processor.eos_token_id == ref_config.eos_token_id


# ---------------------------------------------------------------------------------------------
# saving and conversion


@pytest.fixture(scope="module")
def tinyvr_dir(tmp_path_factory, tokenizer):
    """A tinyvr folder of the plain tiny preset (4 heads × 32, FF ×2, 8 frames: beyond the reference)."""
    from tinyvr.data.processor import Processor
    from tinyvr.model import TinyVideoForConditionalGeneration, build_config

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    cfg = build_config("tiny", vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=eos,
                       text_config={"initializer_range": 0.2})
    torch.manual_seed(1)
    model = TinyVideoForConditionalGeneration(cfg).eval()
    out = tmp_path_factory.mktemp("tinyvr") / "model"
    model.save_pretrained(out)
    Processor(tokenizer, image_size=64, num_frames=8).save_pretrained(out)
    return out


def test_round_trip_tinyvr_reference_tinyvr(tinyvr_dir, tmp_path):
    from tinyvr.data.processor import Processor
    from tinyvr.model import TinyVideoForConditionalGeneration
    from tinyvr.model.reference import convert
    from tinyvr.recipes.common import load_model

    ref, back = tmp_path / "ref", tmp_path / "back"
    msg = convert(tinyvr_dir, ref, to="reference")
    assert str(ref) in msg and "reference" in msg and "hard-codes" in msg  # non-standard resampler noted
    cfg = json.loads((ref / "config.json").read_text())
    for key, value in {"model_type": "tinyllava", "architectures": ["TinyLlavaForConditionalGeneration"],
                       "connector_type": "groupresampler", "group": 8, "num_queries": 64,
                       "num_resampler_layers": 1, "image_token_index": -200, "ignore_index": -100,
                       "tokenizer_model_max_length": 3072, "tokenizer_padding_side": "right",
                       "vision_feature_layer": -2, "vision_feature_select_strategy": "patch",
                       "pad_token": "<|endoftext|>", "hidden_size": 256, "use_cache": True}.items():
        assert cfg[key] == value, key
    assert cfg["vision_config"]["model_type"] == "siglip_vision_model"
    assert cfg["text_config"]["model_type"] == "qwen2" and cfg["text_config"]["rope_theta"] == 10000.0
    gen = json.loads((ref / "generation_config.json").read_text())
    assert gen["use_cache"] is False and gen["eos_token_id"] == cfg["pad_token_id"]
    from safetensors import safe_open

    with safe_open(str(ref / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "language_model.lm_head.weight" not in keys
    assert "vision_tower._vision_tower.vision_model.head.probe" in keys and "connector._connector.latents" in keys

    msg = convert(ref, back, to="tinyvr")
    assert str(back) in msg
    original = TinyVideoForConditionalGeneration.from_pretrained(tinyvr_dir).eval()
    restored = TinyVideoForConditionalGeneration.from_pretrained(back).eval()
    sd_a, sd_b = original.state_dict(), restored.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    for field in ("group", "num_queries", "resampler_depth", "resampler_heads", "resampler_head_dim",
                  "resampler_ff_mult", "num_frames", "vision_feature_layer", "eos_token_id", "pad_token_id"):
        assert getattr(restored.config, field) == getattr(original.config, field), field
    proc = Processor.from_pretrained(back)
    assert (proc.image_size, proc.num_frames) == (64, 8)

    ids = torch.tensor([proc.encode_prompt("What happens?")])
    pixels = torch.rand(1, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = logits(original, ids, pixels)
    assert torch.equal(logits(restored, ids, pixels), expected)
    model, processor = load_model(ref)  # recipes load reference folders directly
    assert torch.equal(logits(model, ids, pixels), expected)
    assert processor.encode_prompt("What happens?") == ids[0].tolist()


def test_save_reference_shards_and_cleans_old_files(tinyvr_dir, tmp_path):
    from tinyvr.data.processor import Processor
    from tinyvr.model import TinyVideoForConditionalGeneration
    from tinyvr.model.reference import load_reference, save_reference

    model = TinyVideoForConditionalGeneration.from_pretrained(tinyvr_dir).eval()
    processor = Processor.from_pretrained(tinyvr_dir)
    out = tmp_path / "ref"
    out.mkdir()
    (out / "model-00001-of-00099.safetensors").write_bytes(b"stale")
    files = save_reference(model, processor, out, shard_size="1MB", dtype=torch.bfloat16)
    assert len(files) > 2 and not (out / "model-00001-of-00099.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert {f.name for f in files} == set(index["weight_map"].values())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded, _ = load_reference(out, dtype="auto")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    sd = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k].to(torch.bfloat16) if v.is_floating_point() else sd[k]), k


def test_convert_bad_source(tmp_path, tinyvr_dir, ref_dir):
    from tinyvr.model.reference import convert

    with pytest.raises(CheckpointError, match=str(tmp_path / "missing")):
        convert(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(CheckpointError, match="already a tinyvr folder"):
        convert(tinyvr_dir, tmp_path / "out", to="tinyvr")
    with pytest.raises(CheckpointError, match="already in the reference layout"):
        convert(ref_dir, tmp_path / "out", to="reference")
    with pytest.raises(CheckpointError, match="destination is the source"):
        convert(ref_dir, ref_dir, to="tinyvr")
    with pytest.raises(ConfigError):
        convert(ref_dir, tmp_path / "out", to="gguf")


def test_cli_convert(ref_dir, tmp_path, capsys):
    from tinyvr.cli import main

    assert main(["convert", str(ref_dir), str(tmp_path / "out")]) == 0
    assert "converted" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] != "tinyllava"


# ---------------------------------------------------------------------------------------------
# tokenizer: Qwen2-format files loaded locally reproduce the reference prompt ids


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.fixture(scope="module")
def qwen_style_tokenizer():
    """A small byte-level BPE with Qwen2's normalizer / pre-tokenizer / decoder (raw `tokenizers` object)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    corpus = [SYSTEM, "USER: ", " ASSISTANT: ", "Which shape moves first? A. red circle B. blue square",
              "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def qwen_tokenizer_config() -> dict:
    """tokenizer_config.json shaped like Qwen2.5-3B's (no BOS, EOS = PAD = <|endoftext|>)."""
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {"0": {"content": "<|endoftext|>", "lstrip": False, "normalized": False,
                                       "rstrip": False, "single_word": False, "special": True}},
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json+merges.txt"])
def test_qwen2_tokenizer_files_give_reference_prompt_ids(files, tmp_path, qwen_style_tokenizer, ref_tensors,
                                                         ref_config):
    from tinyvr.model.reference import load_reference

    folder = write_reference(tmp_path / "ckpt", ref_tensors, reference_config_json(ref_config), None)
    if files == "tokenizer.json":
        qwen_style_tokenizer.save(str(folder / "tokenizer.json"))
    else:  # what the reference's slow Qwen2Tokenizer writes (the released folders have no tokenizer.json)
        qwen_style_tokenizer.model.save(str(folder))
        assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    (folder / "tokenizer_config.json").write_text(json.dumps(qwen_tokenizer_config()))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))

    _, processor = load_reference(folder)
    question = "Which shape moves first?\nA. red circle\nB. blue square"

    def enc(text):
        return qwen_style_tokenizer.encode(text, add_special_tokens=False).ids

    # tokenizer_image_token: pieces around <image> tokenised separately, joined by -200 (spec §1.5, §4.1)
    manual = enc(SYSTEM + " USER: ") + [IMAGE_TOKEN_INDEX] + enc("\n" + question + " ASSISTANT:")
    assert processor.encode_prompt(question) == manual
    assert processor.eos_token_id == processor.pad_token_id == qwen_style_tokenizer.token_to_id("<|endoftext|>")
    assert processor.tokenizer.bos_token_id is None
    assert processor.decode(manual) == f"{SYSTEM} USER: \n{question} ASSISTANT:"
