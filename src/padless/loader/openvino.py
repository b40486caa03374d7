"""OpenVINO IR of a Hugging Face sequence classifier or embedding model: converted from PyTorch, checked, optionally
int8 (classifiers), cached.

:func:`export_openvino` converts the fp32 model with ``openvino.convert_model`` (the SDPA-attention model, which the
CPU plugin runs as one fused ScaledDotProductAttention op; eager attention if that does not convert or match), with
the traced inputs of the ONNX export (:func:`padless.loader.export.example_inputs`: ``input_ids``,
``attention_mask`` and, for models with two segment types, ``token_type_ids``), dynamic batch and sequence axes, and
output ``logits`` (for the embed task ``embeddings``: a :class:`padless.loader.embedding.PooledEncoder`, pooling and
normalisation inside the IR). Weights stay fp32 in the ``.bin`` (``compress_to_fp16=False``). The IR is refused unless
it matches PyTorch fp32 within ``EXPORT_TOLERANCE`` on :func:`padless.loader.export.check_feed`'s padded batch with a
two-segment row, compiled with the f32 precision hint: without it OpenVINO runs bf16 by itself on CPUs that have it.

:func:`quantize_openvino` is NNCF post-training int8 (``ModelType.TRANSFORMER``: SmoothQuant, then fast bias
correction; FakeQuantize ops on the MatMul inputs, which the CPU plugin runs as int8 kernels).

:func:`ensure_openvino` converts a model folder once into ``$PADLESS_CACHE/openvino/<digest>/model.xml`` (the digest
covers the folder's config and weights and ``IR_FORMAT``, and for the embed task its pooling and normalisation:
:func:`padless.loader.export.task_key`); a ``padless optimize`` folder carries its own IRs under
``variants/``. The int8 IR of a plain folder (``model-int8.xml`` there) is calibrated on padless's built-in generic
sample, not on the user's text: :func:`generic_calibration`, the first ``CALIBRATION_TEXTS`` VADER snippets
(:func:`padless.datasets.vader_texts`: English movie and product reviews, tweets, news) in a fixed seeded shuffle,
one text per feed, tokenized with the folder's tokenizer and truncated at the model's limit. ``padless optimize``
calibrates on the user's own text instead and gates the result.

Every IR is written atomically: ``.bin`` and ``.xml`` under temporary names, then the ``.bin`` renamed, the ``.xml``
last, so an ``.xml`` that exists is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ConfigError, ModelError
from padless.loader.export import (
    EXPORT_TOLERANCE,
    check_feed,
    encoder_dir,
    example_inputs,
    load_for_export,
    model_digest,
    output_name,
    task_key,
    torch_logits,
)
from padless.loader.folders import cache_dir
from padless.loader.sentence import EmbeddingInfo

# Bumped whenever the IR changes (its inputs, outputs, axes, or the int8 recipe and its calibration sample); part of
# every cache key, so IRs written by an older padless are never reused.
IR_FORMAT = 1
CALIBRATION_TEXTS = 300
CALIBRATION_SEED = 0


def compile_cache_dir() -> Path:
    """OpenVINO's ``CACHE_DIR``: compiled models are kept here, so a second start loads instead of recompiling."""
    return cache_dir() / "openvino" / "compiled"


def export_openvino(model_dir: str | Path, out_xml: str | Path, *,
                    embedding: EmbeddingInfo | None = None) -> dict[str, object]:
    """Convert ``model_dir`` to the IR ``out_xml`` (and its ``.bin``), checked against PyTorch; returns what was done,
    for the manifest. With ``embedding``, the embed task's IR (output ``embeddings``), else the classifier's."""
    import openvino as ov

    out = Path(out_xml)
    output = output_name(embedding)
    failures = []
    for attention in ("sdpa", "eager"):
        model = load_for_export(model_dir, embedding, attn_implementation=attention)
        inputs = example_inputs(model)
        try:
            converted = convert_torch(model, inputs, output=output)
        except Exception as err:  # the converter raises its own types for unsupported ops
            failures.append(f"{attention} attention does not convert ({reason(err)})")
            continue
        compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        feed = check_feed(int(model.config.vocab_size), segments="token_type_ids" in inputs)
        max_diff = float(np.abs(compiled(feed)[output] - torch_logits(model, feed)).max())
        if max_diff <= EXPORT_TOLERANCE:
            save_atomically(converted, out)
            return {"max_abs_diff_vs_torch": max_diff, "inputs": list(inputs), "attention": attention,
                    "openvino": ov.__version__}
        failures.append(f"{attention} attention differs from PyTorch by {max_diff:.2e}")
    raise ModelError(f"the OpenVINO conversion of {model_dir} is refused (> {EXPORT_TOLERANCE} from PyTorch or not "
                     f"convertible): {'; '.join(failures)}")


def convert_torch(model: Any, inputs: dict[str, Any], *, output: str | None = None) -> Any:
    """``openvino.convert_model`` traced on ``inputs`` (named by their keys), every input ``batch × sequence``; a
    module that returns a bare tensor (a PooledEncoder) gets its output named ``output``."""
    import openvino as ov

    with warnings.catch_warnings():
        # torch.jit.trace announces its deprecation and transformers warns about traced conditionals; the check in
        # export_openvino compares outputs on other shapes, which is what matters.
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model, example_input=inputs)
    converted.reshape({name: ov.PartialShape([-1, -1]) for name in inputs})
    if output is not None and output not in converted.outputs[0].get_names():
        converted.outputs[0].get_tensor().set_names({output})
    return converted


def quantize_openvino(fp32_xml: str | Path, out_xml: str | Path, calibration: list[dict[str, np.ndarray]], *,
                      subset_size: int = 300) -> dict[str, object]:
    """NNCF post-training int8 of an fp32 IR, written atomically to ``out_xml``; returns what was done.

    Each calibration item is the feed of one text at its own length (``1 × length`` int64 arrays); items without
    ``token_type_ids`` get zeros where the IR takes them. ``subset_size`` items are used (all, if fewer)."""
    import nncf
    import openvino as ov

    model = read_ir(fp32_xml)
    names = [i.get_any_name() for i in model.inputs]
    if not calibration:
        raise ModelError("int8 calibration needs at least one text")
    feeds = [_fit(item, names) for item in calibration]
    used = min(subset_size, len(feeds))
    started = time.perf_counter()
    try:
        with quiet_nncf():
            quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=used)
    except Exception as err:  # NNCF raises many types; the user needs one line
        raise ModelError(f"NNCF could not quantize {fp32_xml}: {reason(err)}") from None
    seconds = time.perf_counter() - started
    save_atomically(quantized, Path(out_xml))
    return {"method": "nncf.quantize, ModelType.TRANSFORMER (post-training int8)", "calibration_items": used,
            "seconds": round(seconds, 1), "nncf": nncf.__version__, "openvino": ov.__version__}


def _fit(item: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    feed = {}
    for name in names:
        if name in item:
            feed[name] = np.asarray(item[name], dtype=np.int64)
        elif name == "token_type_ids" and "input_ids" in item:
            feed[name] = np.zeros_like(np.asarray(item["input_ids"], dtype=np.int64))
        else:
            raise ModelError(f"a calibration item lacks {name!r}, an input of the IR")
    return feed


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF draws progress bars and logs INFO lines on stdout, where ``padless classify`` may be writing results."""
    from nncf.common.logging.logger import nncf_logger, set_log_level

    level = nncf_logger.level
    set_log_level(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NNCF's notes about its own defaults and deprecations
            yield
    finally:
        set_log_level(level)


def save_atomically(model: Any, out: Path) -> None:
    """Save an ``openvino.Model`` as ``out`` (``.xml``) and its ``.bin``, fp32 weights kept as they are."""
    import openvino as ov

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}.xml")  # OpenVINO names the .bin after the .xml
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


def check_ir(xml: str | Path) -> Path:
    """``xml`` if it exists and looks like an IR; else one-line ModelError. (Given a file that is not IR, OpenVINO
    tries every frontend in turn, and TensorFlow's writes its parse errors to stderr.)"""
    import openvino as ov

    path = Path(xml)
    if not path.is_file():
        raise ModelError(f"no OpenVINO IR at {path}; convert one with: padless optimize (or --backend openvino)")
    if not ov.frontend.FrontEndManager().load_by_framework("ir").supported(str(path)):
        raise ModelError(f"{path} is not an OpenVINO IR (.xml); delete it to convert the model again")
    return path


def read_ir(xml: str | Path) -> Any:
    """The ``openvino.Model`` in an IR file; one-line ModelError if it is missing or corrupt."""
    import openvino as ov

    path = check_ir(xml)
    try:
        return ov.Core().read_model(str(path))
    except Exception as err:  # OpenVINO raises RuntimeError with a multi-line trace of its C++ checks
        raise ModelError(f"OpenVINO cannot read {path}: {reason(err)}") from None


def ir_inputs(xml: str | Path) -> list[str]:
    """The input names of an IR, in order."""
    return [i.get_any_name() for i in read_ir(xml).inputs]


def reason(err: BaseException) -> str:
    """The last line of an OpenVINO error: its C++ message is a stack of ``Exception from <file>`` lines and then
    what actually went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def generic_calibration(model_dir: str | Path, inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """padless's built-in int8 calibration sample for a plain folder (see the module docstring): one feed per text,
    ``token_type_ids`` (zeros) only if ``inputs`` has them."""
    from transformers import AutoConfig, AutoTokenizer

    from padless.datasets import vader_texts
    from padless.tokenize import model_max_length

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    limit = model_max_length(tokenizer, AutoConfig.from_pretrained(str(model_dir)))
    texts = list(vader_texts())
    random.Random(CALIBRATION_SEED).shuffle(texts)
    feeds = []
    for text in texts[:CALIBRATION_TEXTS]:
        ids = np.array([tokenizer(text, truncation=True, max_length=limit)["input_ids"]], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        feeds.append(feed)
    return feeds


def _complete(xml: Path) -> bool:
    return xml.is_file() and xml.with_suffix(".bin").is_file()


def ensure_openvino(model_dir: str | Path, *, int8: bool = False, embedding: EmbeddingInfo | None = None) -> Path:
    """The fp32 (or int8) IR for a model folder: a ``padless optimize`` folder's own (classifiers), else converted
    (and quantized on :func:`generic_calibration`) once and cached by content. With ``embedding``, the embed task's
    IR (fp32 only for now)."""
    root = Path(model_dir)
    if embedding is not None and int8:
        raise ConfigError("openvino-int8 is not available for the embed task yet; use openvino (fp32) or openvino-bf16")
    own = root / "variants" / ("openvino-int8" if int8 else "openvino-fp32") / "model.xml"
    if embedding is None and own.is_file():
        return own
    key = f"padless-openvino/{IR_FORMAT}{task_key(embedding)}"
    target = cache_dir() / "openvino" / model_digest(encoder_dir(root, embedding), export_format=key)
    fp32 = target / "model.xml"
    if not _complete(fp32):
        export_openvino(root, fp32, embedding=embedding)
    if not int8:
        return fp32
    q = target / "model-int8.xml"
    if not _complete(q):
        quantize_openvino(fp32, q, generic_calibration(root, ir_inputs(fp32)), subset_size=CALIBRATION_TEXTS)
    return q
