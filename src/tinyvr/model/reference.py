"""Read and write checkpoints in the reference TinyLLaVA-Video layout (spec §2).

A reference folder is one Hugging Face-style folder whose `config.json` has
`model_type: "tinyllava"`, safetensors weights (`model.safetensors`, or shards
`model-0000X-of-0000N.safetensors` + `model.safetensors.index.json`) and the Qwen2.5 tokenizer
files. The module tree is the same as ours except for two prefixes:

    reference                                    tinyvr
    language_model.X                         <-> language_model.X
    vision_tower._vision_tower.vision_model.X <-> vision_tower.X
    connector._connector.X                   <-> connector.X
    _connector.X  (legacy connector file)     -> connector.X

`language_model.lm_head.weight` may be absent (tied to `embed_tokens`, spec §2.5).

Entry points: `load_reference(path) -> (model, processor)`, `save_reference(model, processor, dir)`,
`convert(src, dst, to="tinyvr" | "reference")` (the `tinyvr convert` command).

Loading never unpickles: only safetensors are read unless `allow_pickle=True` is passed for
`pytorch_model*.bin` files. The model is allocated once, uninitialised, in the target dtype and on
the target device, and the checkpoint tensors are copied into it shard by shard (one file open at
a time), so peak host memory is about one model plus one shard.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from tinyvr.constants import EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tinyvr.errors import CheckpointError, ConfigError
from tinyvr.model.configuration import TinyVideoConfig

REFERENCE_MODEL_TYPE = "tinyllava"
REFERENCE_ARCHITECTURE = "TinyLlavaForConditionalGeneration"
REFERENCE_CONNECTOR = "groupresampler"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_SHARD_RE = re.compile(r"^model-(\d+)-of-(\d+)\.safetensors$")
_PICKLE_SHARD_RE = re.compile(r"^pytorch_model-(\d+)-of-(\d+)\.bin$")

# (reference prefix, tinyvr prefix); the first match wins.
KEY_PREFIXES = (
    ("vision_tower._vision_tower.vision_model.", "vision_tower."),
    ("connector._connector.", "connector."),
    ("language_model.", "language_model."),
)
LEGACY_CONNECTOR_PREFIX = "_connector."  # connector/pytorch_model.bin of the sub-folder format

TIED_KEY = "language_model.lm_head.weight"
TIED_SOURCE = "language_model.model.embed_tokens.weight"

# Values the reference hard-codes (spec §1.3, §1.5, §2.3); used when config.json omits them.
REFERENCE_RESAMPLER = {"resampler_heads": 8, "resampler_head_dim": 64, "resampler_ff_mult": 4}
REFERENCE_NUM_FRAMES = 16
REFERENCE_MAX_LENGTH = 3072
# google/siglip-so400m-patch14-384 vision tower (spec §1.2): used when config.json has no vision_config.
SIGLIP_SO400M = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 384,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}
SIGLIP_NAME = "google/siglip-so400m-patch14-384"
QWEN_NAME = "Qwen/Qwen2.5-3B"  # the reference picks its LLM class by the substring "qwen2" of this
# Keys of a sub-config dict that describe where/how it was saved, not the architecture.
_SUBCONFIG_DROP = ("_attn_implementation_autoset", "_name_or_path", "architectures", "torch_dtype", "dtype",
                   "transformers_version", "model_name_or_path", "model_name_or_path2")
# tinyvr fields the reference hard-codes; written to a reference config.json only when they differ
# (the reference code ignores unknown keys, so such a folder is still readable by tinyvr).
_EXTENSION_KEYS = (*REFERENCE_RESAMPLER, "num_frames")

_MAX_NAMES = 20  # keys listed per category in an error message


# ---------------------------------------------------------------------------------------------
# config


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def is_reference_folder(path) -> bool:
    """True if `path/config.json` exists and has `model_type: "tinyllava"`."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("model_type") == REFERENCE_MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def _clean_subconfig(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _SUBCONFIG_DROP}


def _opt(cfg: dict, key: str, default):
    """`cfg[key]`, or `default` when the key is absent or null."""
    value = cfg.get(key)
    return default if value is None else value


def reference_to_config(ref_cfg: dict) -> TinyVideoConfig:
    """`TinyVideoConfig` of a reference `config.json` dict (spec §2.3).

    Required: `text_config` (the Qwen2 config), `group` and `num_queries` (the reference fails
    without them). Optional with the reference's defaults: `vision_config` (SigLIP-so400m/384),
    `num_resampler_layers` (3), `vision_feature_layer` (-2), `vision_feature_select_strategy`
    ("patch"). A sub-config dict that is present but partial gets the transformers class defaults
    for the missing keys, as in the reference (which rebuilds it with `from_dict`). Resampler
    heads 8 × head_dim 64, FF ×4 and 16 frames are hard-coded in the reference; the keys
    `resampler_heads`, `resampler_head_dim`, `resampler_ff_mult`, `num_frames` (written by
    `save_reference` for non-standard models only) override them.
    """
    if not isinstance(ref_cfg, dict):
        raise ConfigError(f"reference config must be a dict, got {type(ref_cfg).__name__}")
    model_type = ref_cfg.get("model_type")
    if model_type != REFERENCE_MODEL_TYPE:
        raise ConfigError(f"config.json: model_type is {model_type!r}, expected {REFERENCE_MODEL_TYPE!r}")
    connector = ref_cfg.get("connector_type", REFERENCE_CONNECTOR)
    if connector != REFERENCE_CONNECTOR:
        raise ConfigError(f"config.json: connector_type {connector!r} is not supported "
                          f"(tinyvr implements {REFERENCE_CONNECTOR!r} only)")
    text = ref_cfg.get("text_config")
    if not isinstance(text, dict):
        raise ConfigError("config.json: field 'text_config' (the Qwen2 LLM config) is missing or not an object")
    text = _clean_subconfig(text)
    text.setdefault("model_type", "qwen2")
    if text["model_type"] != "qwen2":
        raise ConfigError(f"config.json: text_config.model_type is {text['model_type']!r}; "
                          "tinyvr supports Qwen2 language models only")
    vision = ref_cfg.get("vision_config")
    if vision is None:
        vision = dict(SIGLIP_SO400M)
    elif not isinstance(vision, dict):
        raise ConfigError("config.json: field 'vision_config' must be an object")
    vision = _clean_subconfig(vision)
    vision.setdefault("model_type", "siglip_vision_model")
    if vision["model_type"] != "siglip_vision_model":
        raise ConfigError(f"config.json: vision_config.model_type is {vision['model_type']!r}, "
                          "expected 'siglip_vision_model'")
    for name in ("group", "num_queries"):
        if ref_cfg.get(name) is None:
            raise ConfigError(f"config.json: field {name!r} is missing (the reference cannot build its "
                              "groupresampler connector without it)")

    eos = text.get("eos_token_id")
    pad = ref_cfg.get("pad_token_id")
    if pad is None:
        pad = text.get("pad_token_id", eos)
    values: dict[str, Any] = {
        "text_config": text,
        "vision_config": vision,
        "group": ref_cfg["group"],
        "num_queries": ref_cfg["num_queries"],
        "resampler_depth": _opt(ref_cfg, "num_resampler_layers", 3),
        "vision_feature_layer": _opt(ref_cfg, "vision_feature_layer", -2),
        "vision_feature_select_strategy": _opt(ref_cfg, "vision_feature_select_strategy", "patch"),
        "num_frames": _opt(ref_cfg, "num_frames", REFERENCE_NUM_FRAMES),
        "image_token_index": IMAGE_TOKEN_INDEX,  # the reference writes the constant, whatever the JSON says
        "pad_token_id": pad,
        "eos_token_id": eos,
        "bos_token_id": text.get("bos_token_id"),
    }
    for key, default in REFERENCE_RESAMPLER.items():
        values[key] = _opt(ref_cfg, key, default)
    return TinyVideoConfig(**values)


def config_to_reference(config: TinyVideoConfig, *, dtype: torch.dtype | None = None) -> dict:
    """The reference `config.json` dict of a `TinyVideoConfig` (inverse of `reference_to_config`)."""
    import transformers

    text = config.text_config.to_dict()
    vision = config.vision_config.to_dict()
    dtype_name = str(dtype).replace("torch.", "") if dtype is not None else None
    # transformers 4.49 (the reference's) reads rope_theta / rope_scaling, not rope_parameters.
    rope = dict(text.get("rope_parameters") or {})
    if "rope_theta" in rope:
        text["rope_theta"] = rope["rope_theta"]
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    text["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    for sub in (text, vision):
        for k in ("dtype", "transformers_version", "_name_or_path"):
            sub.pop(k, None)
        sub["torch_dtype"] = dtype_name
    text["_name_or_path"] = QWEN_NAME
    vision["model_type"] = "siglip_vision_model"
    vision["model_name_or_path"] = SIGLIP_NAME
    vision["model_name_or_path2"] = ""
    out = {
        "_name_or_path": "",
        "architectures": [REFERENCE_ARCHITECTURE],
        "cache_dir": None,
        "connector_type": REFERENCE_CONNECTOR,
        "group": config.group,
        "hidden_size": config.text_config.hidden_size,
        "ignore_index": IGNORE_INDEX,
        "image_aspect_ratio": "square",
        "image_token_index": IMAGE_TOKEN_INDEX,
        "llm_model_name_or_path": QWEN_NAME,
        "model_type": REFERENCE_MODEL_TYPE,
        "num_queries": config.num_queries,
        "num_resampler_layers": config.resampler_depth,
        "pad_token": EOS_TOKEN,
        "pad_token_id": config.pad_token_id,
        "resampler_hidden_size": 768,  # unused by the groupresampler connector
        "text_config": text,
        "tokenizer_model_max_length": REFERENCE_MAX_LENGTH,
        "tokenizer_name_or_path": QWEN_NAME,
        "tokenizer_padding_side": "right",
        "tokenizer_use_fast": False,
        "torch_dtype": dtype_name,
        "transformers_version": transformers.__version__,
        "tune_type_connector": "full",
        "tune_type_llm": "full",
        "tune_type_vision_tower": "frozen",
        "tune_vision_tower_from_layer": 0,
        "use_cache": True,
        "vision_config": vision,
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "vision_hidden_size": config.vision_config.hidden_size,
        "vision_model_name_or_path": SIGLIP_NAME,
        "vision_model_name_or_path2": "",
        "vocab_size": config.text_config.vocab_size,
    }
    out.update(nonstandard_fields(config))
    return out


def nonstandard_fields(config: TinyVideoConfig) -> dict:
    """Fields the reference hard-codes but `config` sets differently ({} for the released model)."""
    defaults = {**REFERENCE_RESAMPLER, "num_frames": REFERENCE_NUM_FRAMES}
    return {k: getattr(config, k) for k in _EXTENSION_KEYS if getattr(config, k) != defaults[k]}


# ---------------------------------------------------------------------------------------------
# keys


def map_reference_key(key: str) -> str:
    """tinyvr state-dict key of a reference key; CheckpointError if the prefix is unknown."""
    for ref, ours in KEY_PREFIXES:
        if key.startswith(ref):
            return ours + key[len(ref):]
    if key.startswith(LEGACY_CONNECTOR_PREFIX):
        return "connector." + key[len(LEGACY_CONNECTOR_PREFIX):]
    raise CheckpointError(f"unknown reference key {key!r}: expected a prefix among "
                          f"{[p for p, _ in KEY_PREFIXES] + [LEGACY_CONNECTOR_PREFIX]}")


def map_tinyvr_key(key: str) -> str:
    """Reference state-dict key of a tinyvr key; CheckpointError if the prefix is unknown."""
    for ref, ours in KEY_PREFIXES:
        if key.startswith(ours):
            return ref + key[len(ours):]
    raise CheckpointError(f"unknown tinyvr key {key!r}: expected a prefix among {[o for _, o in KEY_PREFIXES]}")


# ---------------------------------------------------------------------------------------------
# weight files


class _Tensors:
    """Name -> (shape, dtype, file) over the weight files of one folder, read from the headers only.

    `by_file()` then yields each file's tensors while that one file is open, so the memory map of
    a shard is released before the next one is read.
    """

    def __init__(self):
        self.shape: dict[str, tuple[int, ...]] = {}
        self.dtype: dict[str, torch.dtype | None] = {}
        self.file: dict[str, Path] = {}
        self._pickled: dict[Path, dict] = {}  # allow_pickle only: the (memory-mapped) loaded dicts

    def add(self, name: str, shape, dtype, file: Path):
        if name in self.file and self.file[name] != file:
            raise CheckpointError(f"{file}: tensor {name!r} is also stored in {self.file[name]}")
        self.shape[name], self.dtype[name], self.file[name] = tuple(shape), dtype, file

    def keys(self) -> list[str]:
        return list(self.file)

    def by_file(self, names):
        """Yield (name, tensor) for `names`, grouped by file, opening one file at a time."""
        from safetensors import safe_open

        groups: dict[Path, list[str]] = {}
        for name in names:
            groups.setdefault(self.file[name], []).append(name)
        for file, group in groups.items():
            if file in self._pickled:
                state = self._pickled[file]
                for name in group:
                    yield name, state[name]
                continue
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in group:
                    yield name, handle.get_tensor(name)


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _check_index_coverage(tensors: _Tensors, expect: dict[str, Path]) -> None:
    absent = sorted(n for n in expect if n not in tensors.file)
    if absent:
        where = ", ".join(f"{n} (in {expect[n].name})" for n in absent[:_MAX_NAMES])
        raise CheckpointError(f"{len(absent)} tensor(s) listed in the index are not in their shard: {where}"
                              + (" ..." if len(absent) > _MAX_NAMES else ""))


def _open_safetensors(files: list[Path], tensors: _Tensors, expect: dict[str, Path] | None = None) -> None:
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    if expect is not None and expect.get(name) != file:
                        continue  # the index decides which file holds a tensor
                    piece = handle.get_slice(name)
                    tensors.add(name, piece.get_shape(), _ST_DTYPES.get(piece.get_dtype()), file)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{file}: cannot read safetensors file ({e})") from e
    if expect is not None:
        _check_index_coverage(tensors, expect)


def _shard_files(folder: Path, regex: re.Pattern) -> list[Path] | None:
    """Shard files named `...-0000X-of-0000N...` in `folder`; CheckpointError naming missing ones."""
    found = {}
    for p in folder.iterdir():
        m = regex.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        return None
    if len(found) > 1:
        raise CheckpointError(f"{folder}: shards of different sets ({sorted(found)} files) and no index file")
    total, shards = next(iter(found.items()))
    missing = [i for i in range(1, total + 1) if i not in shards]
    if missing:
        example = next(iter(shards.values())).name
        names = [re.sub(r"-(\d+)-of-", f"-{i:0{len(regex.match(example).group(1))}d}-of-", example, count=1)
                 for i in missing]
        raise CheckpointError(f"{folder}: missing shard file(s) {', '.join(names)}")
    return [shards[i] for i in range(1, total + 1)]


def _read_index(index: Path) -> dict[str, Path]:
    data = _read_json(index)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no 'weight_map' object")
    folder = index.parent
    files = {name: folder / str(fname) for name, fname in weight_map.items()}
    missing = sorted({p.name for p in files.values() if not p.is_file()})
    if missing:
        raise CheckpointError(f"{folder}: shard file(s) listed in {index.name} not found: {', '.join(missing)}")
    return files


def _open_pickle(files: list[Path], tensors: _Tensors, expect: dict[str, Path] | None = None) -> None:
    for file in files:
        try:
            state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"{file}: cannot load ({e})") from e
        tensors._pickled[file] = state
        for name, t in state.items():
            if expect is not None and expect.get(name) != file:
                continue
            tensors.add(name, t.shape, t.dtype, file)
    if expect is not None:
        _check_index_coverage(tensors, expect)


def _open_weights(folder: Path, allow_pickle: bool) -> _Tensors:
    """Every tensor of `folder`'s weight files (safetensors; `.bin` only with `allow_pickle`)."""
    tensors = _Tensors()
    if (folder / SAFE_INDEX).is_file():
        expect = _read_index(folder / SAFE_INDEX)
        _open_safetensors(sorted(set(expect.values())), tensors, expect)
        return tensors
    if (folder / SAFE_WEIGHTS).is_file():
        _open_safetensors([folder / SAFE_WEIGHTS], tensors)
        return tensors
    shards = _shard_files(folder, _SHARD_RE)
    if shards:  # index lost: every shard of the set must be there
        _open_safetensors(shards, tensors)
        return tensors
    pickles = (folder / PICKLE_INDEX).is_file() or (folder / PICKLE_WEIGHTS).is_file() or any(
        _PICKLE_SHARD_RE.match(p.name) for p in folder.iterdir())
    if pickles:
        if not allow_pickle:
            raise CheckpointError(
                f"{folder}: weights are only in PyTorch pickle files ({PICKLE_WEIGHTS}*); tinyvr reads "
                "safetensors only. Pass allow_pickle=True to load_reference if you trust this folder, or "
                "convert the weights to safetensors first.")
        if (folder / PICKLE_INDEX).is_file():
            expect = _read_index(folder / PICKLE_INDEX)
            _open_pickle(sorted(set(expect.values())), tensors, expect)
        elif (folder / PICKLE_WEIGHTS).is_file():
            _open_pickle([folder / PICKLE_WEIGHTS], tensors)
        else:
            _open_pickle(_shard_files(folder, _PICKLE_SHARD_RE), tensors)
        return tensors
    if any((folder / sub).is_dir() for sub in ("language_model", "connector", "vision_tower")):
        raise CheckpointError(
            f"{folder}: sub-folder layout (language_model/, vision_tower/, connector/ with pickle files, "
            "written by the TinyLLaVA-Video pretrain stage) is not supported; load it with the reference "
            "code and save a single-folder checkpoint first")
    raise CheckpointError(f"{folder}: no weights found (expected {SAFE_WEIGHTS} or {SAFE_INDEX} with its shards)")


# ---------------------------------------------------------------------------------------------
# loading


def _resolve_dtype(dtype, tensors: _Tensors, ref_cfg: dict) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        for name in tensors.keys():
            d = tensors.dtype.get(name)
            if d is not None and d.is_floating_point:
                return d
        named = ref_cfg.get("torch_dtype")
        return getattr(torch, named) if isinstance(named, str) and hasattr(torch, named) else torch.float32
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ConfigError(f"dtype must be a torch dtype, its name or 'auto', got {dtype!r}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_empty_model(config: TinyVideoConfig, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """`TinyVideoForConditionalGeneration(config)` with uninitialised weights (fast, memory untouched).

    Non-persistent buffers (rotary frequencies, SigLIP position ids, the resampler PE table) are
    computed by the constructors as usual; tied weights are tied.
    """
    from transformers import initialization as init

    from tinyvr.model.modeling import TinyVideoForConditionalGeneration

    with init.no_init_weights(), _default_dtype(dtype), torch.device(device):
        model = TinyVideoForConditionalGeneration(config)
    model.tie_weights()  # skipped with init under no_init_weights
    return model


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMES])
    return shown + (f" ... and {len(keys) - _MAX_NAMES} more" if len(keys) > _MAX_NAMES else "")


def _check_keys(model, tensors: _Tensors, folder: Path, strict: bool) -> tuple[dict[str, str], list[str], bool]:
    """Match checkpoint tensors to model keys. Returns ({tinyvr key: reference key}, missing, tied).

    Raises CheckpointError listing wrong shapes (always), and missing / unexpected keys (strict).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = bool(model.language_model.config.tie_word_embeddings)
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for ref_key in tensors.keys():
        try:
            ours = map_reference_key(ref_key)
        except CheckpointError:
            unexpected.append(ref_key)
            continue
        if ours in mapping:
            raise CheckpointError(f"{folder}: tensors {mapping[ours]!r} and {ref_key!r} both map to {ours!r}")
        if ours not in expected:
            unexpected.append(ref_key)
            continue
        mapping[ours] = ref_key
    missing = [k for k in expected if k not in mapping and not (tied and k == TIED_KEY)]
    shapes = [f"{mapping[k]}: checkpoint {list(tensors.shape[mapping[k]])} vs model {list(expected[k])}"
              for k in mapping if tensors.shape[mapping[k]] != expected[k]]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) with the wrong shape: " + "; ".join(shapes[:_MAX_NAMES]))
    if missing and strict:
        problems.append(f"{len(missing)} missing key(s): " + _names([map_tinyvr_key(k) for k in missing]))
    if unexpected and strict:
        problems.append(f"{len(unexpected)} unexpected key(s): " + _names(sorted(unexpected)))
    if problems:
        raise CheckpointError(f"{folder}: weights do not match config.json: " + " | ".join(problems))
    if missing:
        warnings.warn(f"{folder}: {len(missing)} key(s) not in the checkpoint, initialised randomly: "
                      + _names([map_tinyvr_key(k) for k in missing]), stacklevel=3)
    if unexpected:
        warnings.warn(f"{folder}: {len(unexpected)} checkpoint key(s) ignored: {_names(sorted(unexpected))}",
                      stacklevel=3)
    return mapping, missing, tied


def _init_missing(model, key: str) -> None:
    """Initialise the module owning `key` as a fresh model would (the part's own init scheme)."""
    from transformers import PreTrainedModel

    owner = model.get_submodule(key.rpartition(".")[0])
    part = getattr(model, key.split(".", 1)[0])
    (part if isinstance(part, PreTrainedModel) else model)._init_weights(owner)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' warning that config.json's model_type "tinyllava" is unknown to it
    (AutoTokenizer reads config.json of the folder it loads from)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_processor(folder: Path, config: TinyVideoConfig, ref_cfg: dict, tokenizer_dir):
    from tinyvr.data.processor import Processor
    from tinyvr.data.tokenizer import load_tokenizer

    tok_dir = Path(tokenizer_dir) if tokenizer_dir else folder
    try:
        with _quiet_transformers():
            tokenizer = load_tokenizer(tok_dir)
    except CheckpointError as e:
        hint = "" if tokenizer_dir else " (pass tokenizer_dir= a local Qwen2.5 tokenizer folder)"
        raise CheckpointError(f"{e}{hint}") from e
    vocab = config.text_config.vocab_size
    if len(tokenizer) > vocab:
        raise CheckpointError(f"{tok_dir}: tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                              f"has {vocab} rows (text_config.vocab_size): wrong tokenizer?")
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    if config.eos_token_id is not None and eos != config.eos_token_id:
        warnings.warn(f"{tok_dir}: tokenizer's {EOS_TOKEN} is id {eos} but config.json says eos_token_id "
                      f"{config.eos_token_id}; generation stops at the tokenizer's id", stacklevel=3)
    max_length = ref_cfg.get("tokenizer_model_max_length") or REFERENCE_MAX_LENGTH
    return Processor(tokenizer, image_size=config.vision_config.image_size, num_frames=config.num_frames,
                     max_length=int(max_length))


def load_reference(path, *, dtype: torch.dtype | str = torch.float32, device="cpu", tokenizer_dir=None,
                   strict: bool = True, allow_pickle: bool = False, attn_implementation: str | None = None):
    """(model, processor) from a reference TinyLLaVA-Video folder (e.g. a released checkpoint).

    `dtype`: the model's dtype ("auto" = the checkpoint's). `tokenizer_dir`: tokenizer folder to use
    instead of the checkpoint's own files. `strict=False` turns missing / unexpected keys into
    warnings (missing ones are initialised randomly); wrong shapes always raise CheckpointError.
    The model is returned in eval mode with the vision tower frozen.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    ref_cfg = _read_json(folder / "config.json")
    if ref_cfg.get("model_type") != REFERENCE_MODEL_TYPE:
        raise CheckpointError(f"{folder}: config.json model_type is {ref_cfg.get('model_type')!r}, "
                              f"expected {REFERENCE_MODEL_TYPE!r} (a reference TinyLLaVA checkpoint)")
    try:
        config = reference_to_config(ref_cfg)
    except ConfigError as e:
        raise ConfigError(f"{folder}/{e}" if str(e).startswith("config.json") else f"{folder}: {e}") from e
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    tensors = _open_weights(folder, allow_pickle)
    dtype = _resolve_dtype(dtype, tensors, ref_cfg)
    config.dtype = dtype
    model = build_empty_model(config, dtype=dtype, device=device)
    mapping, missing, tied = _check_keys(model, tensors, folder, strict)
    params = model.state_dict(keep_vars=True)
    by_ref = {ref_key: ours for ours, ref_key in mapping.items()}
    tied_ref = mapping.get(TIED_KEY) if tied else None  # a stored copy of the tied lm_head
    with torch.no_grad():
        for key in missing:  # strict=False only: initialise what the checkpoint lacks
            _init_missing(model, key)
        for ref_key, value in tensors.by_file([k for k in by_ref if k != tied_ref]):
            params[by_ref[ref_key]].copy_(value)
        for _, value in tensors.by_file([tied_ref] if tied_ref else []):
            embed = params[TIED_SOURCE]
            if not torch.equal(value.to(embed.device, embed.dtype), embed):
                warnings.warn(f"{folder}: {TIED_KEY} differs from {TIED_SOURCE}; tie_word_embeddings is "
                              "true, so embed_tokens is used for both (as the reference)", stacklevel=2)
    model.eval()
    processor = _load_processor(folder, config, ref_cfg, tokenizer_dir)
    return model, processor


# ---------------------------------------------------------------------------------------------
# saving


def _remove_old_weights(out: Path) -> None:
    for p in out.iterdir():
        if p.name in (SAFE_WEIGHTS, SAFE_INDEX) or _SHARD_RE.match(p.name):
            p.unlink()


def save_reference(model, processor, out_dir, *, shard_size: int | str = "5GB",
                   dtype: torch.dtype | None = None) -> list[Path]:
    """Write `model` (a `TinyVideoForConditionalGeneration`) and the tokenizer in the reference layout.

    Files: config.json (model_type "tinyllava"), generation_config.json, `model.safetensors` or
    shards of at most `shard_size` + `model.safetensors.index.json`, and the tokenizer files.
    `language_model.lm_head.weight` is left out when tied. `dtype` casts the saved weights
    (default: the model's). Returns the weight files written.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    tied = bool(model.language_model.config.tie_word_embeddings)
    state = {}
    for key, value in model.state_dict().items():
        if tied and key == TIED_KEY:
            continue
        state[map_tinyvr_key(key)] = value.detach()
    save_dtype = dtype or next(iter(state.values())).dtype
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    try:
        from huggingface_hub import split_torch_state_dict_into_shards

        split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                                   max_shard_size=shard_size)
        shards, sharded = split.filename_to_tensors, split.is_sharded
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        shards, sharded = _split_simple(state, shard_size)
    _remove_old_weights(out)
    written = []
    weight_map = {}
    for fname, names in shards.items():
        save_file({n: state[n].to("cpu").contiguous() for n in names}, str(out / fname), metadata={"format": "pt"})
        written.append(out / fname)
        weight_map.update({n: fname for n in names})
    if sharded:
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    ref_cfg = config_to_reference(config, dtype=save_dtype)
    (out / "config.json").write_text(json.dumps(ref_cfg, indent=2, sort_keys=True) + "\n")
    gen = {"bos_token_id": config.bos_token_id if config.bos_token_id is not None else config.eos_token_id,
           "eos_token_id": config.eos_token_id, "use_cache": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if processor is not None:
        processor.tokenizer.save_pretrained(str(out))
    return written


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", str(size).upper())
    if not m:
        raise ConfigError(f"shard_size must be bytes or like '5GB', got {size!r}")
    unit = m.group(2)
    base = 1024 if "I" in unit else 1000
    power = " KMGT".index(unit[0]) if unit[0] in "KMGT" else 0
    return int(float(m.group(1)) * base**power)


def _split_simple(state: dict, shard_size) -> tuple[dict[str, list[str]], bool]:
    limit = _parse_size(shard_size)
    groups: list[list[str]] = [[]]
    used = 0
    for name, t in state.items():
        size = t.numel() * t.element_size()
        if groups[-1] and used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    if len(groups) == 1:
        return {SAFE_WEIGHTS: groups[0]}, False
    n = len(groups)
    return {f"model-{i + 1:05d}-of-{n:05d}.safetensors": g for i, g in enumerate(groups)}, True


# ---------------------------------------------------------------------------------------------
# conversion


def convert(src, dst, *, to: str = "tinyvr", shard_size: int | str = "5GB") -> str:
    """Convert a checkpoint folder between the reference layout and tinyvr's; returns a message.

    `to="tinyvr"`: reference folder -> `save_pretrained` folder (+ processor files).
    `to="reference"`: tinyvr folder -> reference layout. Weights keep their stored dtype.
    """
    from tinyvr.data.processor import Processor
    from tinyvr.model.modeling import TinyVideoForConditionalGeneration

    if to not in ("tinyvr", "reference"):
        raise ConfigError(f"convert: to must be 'tinyvr' or 'reference', got {to!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise CheckpointError(f"{src}: checkpoint folder not found")
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: not a model folder (no config.json)")
    if dst.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: destination is the source folder; choose another folder")
    model_type = _read_json(src / "config.json").get("model_type")
    if to == "tinyvr":
        if model_type != REFERENCE_MODEL_TYPE:
            raise CheckpointError(f"{src}: config.json model_type is {model_type!r}, not a reference "
                                  f"{REFERENCE_MODEL_TYPE!r} checkpoint" +
                                  (" (already a tinyvr folder)" if model_type == TinyVideoConfig.model_type else ""))
        model, processor = load_reference(src, dtype="auto")
        dst.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dst)
        processor.save_pretrained(dst)
        note = ""
    else:
        if model_type != TinyVideoConfig.model_type:
            raise CheckpointError(f"{src}: config.json model_type is {model_type!r}, not a tinyvr "
                                  f"{TinyVideoConfig.model_type!r} folder" +
                                  (" (already in the reference layout)" if model_type == REFERENCE_MODEL_TYPE else ""))
        try:
            model = TinyVideoForConditionalGeneration.from_pretrained(src, dtype="auto")
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{src}: cannot load the tinyvr model ({e})") from e
        processor = Processor.from_pretrained(src)
        save_reference(model, processor, dst, shard_size=shard_size)
        odd = nonstandard_fields(model.config)
        note = ("" if not odd else
                f"; note: {odd} differ from the values the reference code hard-codes, so only tinyvr "
                "can load this folder")
    n_params = sum(p.numel() for p in model.parameters())
    dtype = next(model.parameters()).dtype
    return (f"converted {src} -> {dst} ({to} layout, {n_params:,} parameters, "
            f"{str(dtype).replace('torch.', '')}){note}")


__all__ = [
    "build_empty_model",
    "config_to_reference",
    "convert",
    "is_reference_folder",
    "load_reference",
    "map_reference_key",
    "map_tinyvr_key",
    "reference_to_config",
    "save_reference",
]
