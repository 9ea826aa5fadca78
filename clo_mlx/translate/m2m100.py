"""M2M100 / NLLB-200 translation models in MLX.

An encoder-decoder Transformer (pre-LayerNorm, sinusoidal positions offset by the padding id,
embeddings shared by encoder, decoder and output head), loaded from a local Hugging Face
checkpoint (`config.json`, `*.safetensors`, sentencepiece tokenizer files). The first decoder
token is `decoder_start_token_id`; the second is forced to the target-language token.
`generate` does batched greedy or beam decoding with a KV cache and follows the decoding rules
of `transformers`' `generate` (same beam bookkeeping, length penalty and early stopping), so
outputs can be checked token for token against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache

# ISO 639-1 (as py3langid uses) -> NLLB-200 (FLORES-200) language codes.
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn",
    "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "eo": "epo_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr",
    "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "ht": "hat_Latn",
    "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "ku": "kmr_Latn", "ky": "kir_Cyrl",
    "lb": "ltz_Latn", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn", "mg": "plt_Latn",
    "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "mt": "mlt_Latn", "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "nn": "nno_Latn",
    "no": "nob_Latn", "nb": "nob_Latn", "oc": "oci_Latn", "or": "ory_Orya", "pa": "pan_Guru",
    "pl": "pol_Latn", "ps": "pbt_Arab", "pt": "por_Latn", "qu": "quy_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "rw": "kin_Latn", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn",
    "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn",
    "ta": "tam_Taml", "te": "tel_Telu", "tg": "tgk_Cyrl", "th": "tha_Thai", "tl": "tgl_Latn",
    "tr": "tur_Latn", "ug": "uig_Arab", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn",
    "vi": "vie_Latn", "wo": "wol_Latn", "xh": "xho_Latn", "yo": "yor_Latn", "zh": "zho_Hans",
    "zu": "zul_Latn",
}  # fmt: skip


@dataclass
class ModelArgs:
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    activation_function: str = "relu"
    scale_embedding: bool = True
    pad_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    model_type: str = "m2m_100"

    @classmethod
    def from_dict(cls, config: dict) -> ModelArgs:
        names = {f.name for f in fields(cls)}
        args = {k: v for k, v in config.items() if k in names}
        if isinstance(args.get("eos_token_id"), list):
            args["eos_token_id"] = args["eos_token_id"][0]
        if args.get("decoder_start_token_id") is None:
            args["decoder_start_token_id"] = args.get("eos_token_id", 2)
        return cls(**args)


_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "swish": nn.silu}


def sinusoidal_positions(num: int, dim: int, padding_idx: int) -> np.ndarray:
    """fairseq's sinusoidal table (sin half, then cos half), row `padding_idx` zeroed."""
    half = dim // 2
    freq = np.exp(np.arange(half, dtype=np.float32) * -(math.log(10000) / (half - 1)))
    angles = np.arange(num, dtype=np.float32)[:, None] * freq[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if dim % 2:
        table = np.concatenate([table, np.zeros((num, 1), np.float32)], axis=1)
    table[padding_idx] = 0
    return table.astype(np.float32)


class Attention(nn.Module):
    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dims // heads) ** -0.5
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def split(self, x: mx.array) -> mx.array:
        B, L, _ = x.shape
        return x.reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3)

    def key_values(self, x: mx.array) -> tuple[mx.array, mx.array]:
        return self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def __call__(self, x, keys, values, mask=None, group: int = 1) -> mx.array:
        """`group` consecutive rows of `x` share one row of `keys`/`values`/`mask` (the beams
        of one source in cross-attention): their queries are stacked along the length axis."""
        B, L, D = x.shape
        q = self.split(self.q_proj(x).reshape(B // group, group * L, D))
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, L, D))


def _attend(q: mx.array, k: mx.array, v: mx.array, bias: mx.array | None = None) -> mx.array:
    """softmax(q @ k.T + bias) @ v for scaled queries q (B, H, Q, D), keys/values (B, H, L, D):
    the fused kernel on a GPU; on the CPU, where it falls back to separate operations anyway,
    the same products with fewer of them."""
    if mx.default_device() != mx.cpu:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=bias)
    s = q @ k.swapaxes(-1, -2)
    if bias is not None:
        s = s + bias
    return mx.softmax(s, axis=-1, precise=True) @ v


def _fold_norm(norm: nn.LayerNorm, linears: list[nn.Linear], scales: list[float]):
    """(W, b) with x_hat @ W.T + b == concat_i(linear_i(x_hat * g + beta) * scale_i), for the
    LayerNorm's (g, beta): its affine part moves into the projections that follow it."""
    g, beta = norm.weight.astype(mx.float32), norm.bias.astype(mx.float32)
    ws, bs = [], []
    for lin, s in zip(linears, scales, strict=True):
        w = lin.weight.astype(mx.float32)
        ws.append(w * g[None, :] * s)
        bs.append((w @ beta + lin.bias.astype(mx.float32)) * s)
    dtype = linears[0].weight.dtype
    return mx.concatenate(ws).astype(dtype), mx.concatenate(bs).astype(dtype)


class EncoderLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        d = args.d_model
        self.self_attn = Attention(d, args.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, args.encoder_ffn_dim)
        self.fc2 = nn.Linear(args.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _ACTIVATIONS[args.activation_function]

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        h = self.self_attn_layer_norm(x)
        x = x + self.self_attn(h, *self.self_attn.key_values(h), mask=mask)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        d = args.d_model
        self.self_attn = Attention(d, args.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, args.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, args.decoder_ffn_dim)
        self.fc2 = nn.Linear(args.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _ACTIVATIONS[args.activation_function]

    def __call__(self, x, self_mask, cache: KVCache, cross_kv, cross_mask, group=1) -> mx.array:
        h = self.self_attn_layer_norm(x)
        k, v = cache.update_and_fetch(*self.self_attn.key_values(h))
        x = x + self.self_attn(h, k, v, mask=self_mask)
        h = self.encoder_attn_layer_norm(x)
        x = x + self.encoder_attn(h, *cross_kv, mask=cross_mask, group=group)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layers = [EncoderLayer(args) for _ in range(args.encoder_layers)]
        self.layer_norm = nn.LayerNorm(args.d_model)


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layers = [DecoderLayer(args) for _ in range(args.decoder_layers)]
        self.layer_norm = nn.LayerNorm(args.d_model)


@dataclass
class DecoderState:
    """Per-layer self-attention caches, cross-attention keys/values and the source mask.

    With `beams > 1` the decoder rows are `beams` consecutive rows per source, and the
    cross-attention keys/values are stored once per source, not once per beam.
    """

    caches: list[KVCache]
    cross_kv: list[tuple[mx.array, mx.array]]
    cross_mask: mx.array
    beams: int = 1
    cross_bias: mx.array | None = None  # additive form of cross_mask (None: no padding)
    folded: list | None = None  # M2M100._step_weights(), for decode_step

    @property
    def offset(self) -> int:
        return self.caches[0].offset

    def select(self, rows: mx.array, cross_rows: mx.array | None = None) -> None:
        """Keep/reorder decoder rows (finished rows dropped, beams reordered).

        `cross_rows` (default `rows`) picks the sources of the encoder side; reordering beams
        within their sources changes none of it (`cross_rows=False`).
        """
        for c in self.caches:
            c.keys, c.values = c.keys[rows], c.values[rows]
        if cross_rows is False:
            return
        cross_rows = rows if cross_rows is None else cross_rows
        self.cross_kv = [(k[cross_rows], v[cross_rows]) for k, v in self.cross_kv]
        self.cross_mask = self.cross_mask[cross_rows]
        if self.cross_bias is not None:
            self.cross_bias = self.cross_bias[cross_rows]


class M2M100(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.activation_function not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation_function {args.activation_function!r}")
        self.args = args
        self.shared = nn.Embedding(args.vocab_size, args.d_model)
        self.encoder = Encoder(args)
        self.decoder = Decoder(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)
        self.embed_scale = math.sqrt(args.d_model) if args.scale_embedding else 1.0
        self._positions = mx.array(
            sinusoidal_positions(args.max_position_embeddings + 2, args.d_model, args.pad_token_id)
        )

    def _position_table(self, needed: int) -> mx.array:
        if needed > self._positions.shape[0]:  # grows like transformers' table does
            self._positions = mx.array(
                sinusoidal_positions(needed + 2, self.args.d_model, self.args.pad_token_id)
            )
        return self._positions

    def _embed(self, ids: mx.array, offset: int = 0) -> mx.array:
        # Positions count non-pad tokens from pad_token_id + 1; pad tokens get the zero row.
        pad = self.args.pad_token_id
        not_pad = (ids != pad).astype(mx.int32)
        pos = (mx.cumsum(not_pad, axis=1) + offset) * not_pad + pad
        table = self._position_table(pad + 1 + ids.shape[1] + offset)
        return self.shared(ids) * self.embed_scale + table[pos].astype(self.shared.weight.dtype)

    def encode(self, ids: mx.array, mask: mx.array) -> mx.array:
        """Encoder states for right- or left-padded `ids` (B, S); `mask` is 1 on real tokens."""
        attn_mask = self._key_mask(mask)
        x = self._embed(ids)
        for layer in self.encoder.layers:
            x = layer(x, attn_mask)
        return self.encoder.layer_norm(x)

    def _key_mask(self, mask: mx.array) -> mx.array:
        # Boolean (B, 1, 1, S): which keys may be attended to.
        return (mask != 0)[:, None, None, :]

    def start(self, encoder_out: mx.array, mask: mx.array, beams: int = 1) -> DecoderState:
        """Empty decoder state for a batch of encoded sources, `beams` decoder rows each."""
        cross_kv = [layer.encoder_attn.key_values(encoder_out) for layer in self.decoder.layers]
        caches = [KVCache() for _ in self.decoder.layers]
        for c in caches:  # short outputs; beams gather the whole buffer each step
            c.step = 32
        key_mask = self._key_mask(mask)
        bias = None
        if not mx.all(key_mask).item():
            bias = mx.where(key_mask, 0.0, -mx.inf).astype(encoder_out.dtype)
        return DecoderState(caches, cross_kv, key_mask, beams, bias, self._step_weights())

    def _step_weights(self) -> list[dict[str, tuple[mx.array, mx.array]]]:
        """Per decoder layer, (W, b) of one q/k/v projection and of the cross-attention query
        projection for `decode_step`, with the LayerNorm before them folded in and the
        attention scale in the queries (extra memory: 4 * d_model**2 per layer). Rebuilt when
        the weights change."""
        key = tuple(id(p) for _, p in tree_flatten(self.decoder.parameters()))
        if getattr(self, "_folded", (None,))[0] == key:
            return self._folded[1]
        out = []
        for layer in self.decoder.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            norm = layer.self_attn_layer_norm
            qkv = _fold_norm(norm, [sa.q_proj, sa.k_proj, sa.v_proj], [sa.scale, 1, 1])
            cq = _fold_norm(layer.encoder_attn_layer_norm, [ca.q_proj], [ca.scale])
            out.append({"qkv": qkv, "cq": cq})
        mx.eval(out)
        object.__setattr__(self, "_folded", (key, out))
        return out

    def decode_step(self, ids: mx.array, state: DecoderState) -> mx.array:
        """Logits (B, V) for one decoder token per row, `ids` (B,): `decode(ids[:, None], state)`
        in fewer operations (folded weights, no per-head reshapes), for generation."""
        a = self.args
        R = ids.shape[0]
        offset = state.offset
        table = self._position_table(a.pad_token_id + 2 + offset)
        pos = table[a.pad_token_id + 1 + offset].astype(self.shared.weight.dtype)
        x = self.shared(ids) * self.embed_scale + pos * (ids != a.pad_token_id)[:, None]
        nb = state.beams
        # MLX's CPU layer_norm is a chain of small operations; in float32 fewer do (means as
        # matrix products). Elsewhere the fused kernel (which accumulates in float32) runs.
        cpu32 = mx.default_device() == mx.cpu and x.dtype == mx.float32
        mean = mx.full((x.shape[-1], 1), 1 / x.shape[-1], x.dtype) if cpu32 else None

        def norm(x, ln, affine=False):
            if not cpu32:
                w, b = (ln.weight, ln.bias) if affine else (None, None)
                return mx.fast.layer_norm(x, w, b, ln.eps)
            xc = x - x @ mean
            x = xc * mx.rsqrt(mx.addmm(mx.array([ln.eps], x.dtype), xc * xc, mean))
            return x * ln.weight + ln.bias if affine else x

        def linear(x, lin, residual=None):
            if residual is None:
                return mx.addmm(lin.bias, x, lin.weight.T)
            return mx.addmm(residual, x, lin.weight.T) + lin.bias

        for layer, w, cache, (ck, cv) in zip(
            self.decoder.layers, state.folded, state.caches, state.cross_kv, strict=True
        ):
            H = layer.self_attn.heads
            h = norm(x, layer.self_attn_layer_norm)
            qkv = mx.addmm(w["qkv"][1], h, w["qkv"][0].T).reshape(R, 3, H, 1, -1)
            k, v = cache.update_and_fetch(qkv[:, 1], qkv[:, 2])
            x = linear(_attend(qkv[:, 0], k, v).reshape(R, -1), layer.self_attn.out_proj, x)
            h = norm(x, layer.encoder_attn_layer_norm)
            q = mx.addmm(w["cq"][1], h, w["cq"][0].T).reshape(R // nb, nb, H, -1).swapaxes(1, 2)
            o = _attend(q, ck, cv, state.cross_bias).swapaxes(1, 2).reshape(R, -1)
            x = linear(o, layer.encoder_attn.out_proj, x)
            h = layer.act(linear(norm(x, layer.final_layer_norm, True), layer.fc1))
            x = linear(h, layer.fc2, x)
        x = norm(x, self.decoder.layer_norm, True)
        if a.tie_word_embeddings:
            return self.shared.as_linear(x)
        return self.lm_head(x)

    def decode(self, ids: mx.array, state: DecoderState) -> mx.array:
        """Logits (B, T, V) for decoder tokens `ids` (B, T) following those already in `state`."""
        offset = state.offset
        T = ids.shape[1]
        x = self._embed(ids, offset)
        self_mask = None
        if T > 1:
            rows = mx.arange(offset, offset + T)[:, None]
            cols = mx.arange(offset + T)[None, :]
            self_mask = cols <= rows
        for layer, cache, kv in zip(self.decoder.layers, state.caches, state.cross_kv, strict=True):
            x = layer(x, self_mask, cache, kv, state.cross_mask, state.beams)
        x = self.decoder.layer_norm(x)
        if self.args.tie_word_embeddings:
            return self.shared.as_linear(x)
        return self.lm_head(x)

    def __call__(self, input_ids, attention_mask, decoder_input_ids) -> mx.array:
        """Teacher-forced logits, like `M2M100ForConditionalGeneration(...).logits`."""
        enc = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, self.start(enc, attention_mask))

    @staticmethod
    def sanitize(weights: dict[str, mx.array], tie: bool) -> dict[str, mx.array]:
        """Map Hugging Face tensor names onto this module's names."""
        out = {}
        for k, v in weights.items():
            if k.startswith("model."):
                k = k[len("model.") :]
            if "embed_positions" in k:  # sinusoidal, recomputed
                continue
            out[k] = v
        for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if alias in out:
                w = out.pop(alias)
                shared = out.setdefault("shared.weight", w)
                # Checkpoints store copies of the shared table; separate tables are not supported.
                if shared is not w and not mx.array_equal(shared, w).item():
                    raise ValueError(
                        f"{alias} differs from model.shared.weight (untied embeddings)"
                    )
        if "shared.weight" not in out and "lm_head.weight" in out:
            out["shared.weight"] = out["lm_head.weight"]
        if tie:
            out.pop("lm_head.weight", None)
        return out


def _load_weights(path: Path) -> dict[str, mx.array]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        weights = {}
        for f in files:
            weights.update(mx.load(str(f)))
        return weights
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        try:
            import torch
        except ImportError as e:
            raise FileNotFoundError(
                f"{path}: only pytorch_model.bin found and torch is not installed; convert the "
                "checkpoint to safetensors (or `pip install torch`)."
            ) from e
        weights = {}
        for f in bins:
            for k, v in torch.load(f, map_location="cpu", weights_only=True).items():
                weights[k] = mx.array(v.float().numpy()).astype(_mx_dtype(str(v.dtype)))
        return weights
    raise FileNotFoundError(f"{path}: no *.safetensors (or pytorch_model.bin) weights found")


def _mx_dtype(name: str):
    name = name.replace("torch.", "")
    return {"float16": mx.float16, "bfloat16": mx.bfloat16}.get(name, mx.float32)


def load_model(path: str | Path, dtype: str | None = None) -> M2M100:
    """Load an M2M100/NLLB-200 checkpoint from a local directory in Hugging Face layout."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model folder)")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "m2m_100":
        raise ValueError(
            f"{config_file}: model_type is {config.get('model_type')!r}; the m2m100 backend "
            "loads M2M100 and NLLB-200 checkpoints (model_type 'm2m_100'). Use --backend llm "
            "for a chat model."
        )
    args = ModelArgs.from_dict(config)
    model = M2M100(args)
    weights = M2M100.sanitize(_load_weights(path), args.tie_word_embeddings)
    if dtype is not None:
        target = getattr(mx, dtype)
        weights = {k: v.astype(target) for k, v in weights.items()}
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    model.eval()
    return model


GENERATION_DEFAULTS = {"num_beams": 1, "max_new_tokens": 256, "length_penalty": 1.0, "early_stopping": False}  # fmt: skip


def generation_settings(path: str | Path, **flags) -> dict[str, dict]:
    """Decoding settings as `{name: {"value", "from"}}`: a flag that is not None, else the
    checkpoint's `generation_config.json` (else the same keys in `config.json`, as transformers
    reads old checkpoints), else `GENERATION_DEFAULTS`.

    `max_length` there counts the decoder start token, so it gives max_new_tokens = max_length - 1.
    """
    path = Path(path)
    stored, origin = {}, None
    for name in ("generation_config.json", "config.json"):
        f = path / name
        if f.is_file():
            cfg = json.loads(f.read_text())
            keys = ("num_beams", "max_new_tokens", "max_length", "length_penalty", "early_stopping")
            stored = {k: cfg[k] for k in keys if cfg.get(k) is not None}
            if stored:
                origin = name
                break
    if "max_new_tokens" not in stored and "max_length" in stored:
        stored["max_new_tokens"] = int(stored["max_length"]) - 1
    out = {}
    for key, default in GENERATION_DEFAULTS.items():
        if flags.get(key) is not None:
            out[key] = {"value": flags[key], "from": "flag"}
        elif key in stored:
            out[key] = {"value": stored[key], "from": origin}
        else:
            out[key] = {"value": default, "from": "default"}
    return out


class Translator:
    """An M2M100/NLLB model with its tokenizer and language codes, translating text lists."""

    def __init__(self, path: str | Path, dtype: str | None = None):
        from transformers import AutoTokenizer

        self.path = Path(path)
        self.model = load_model(path, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.is_nllb = not hasattr(self.tokenizer, "get_lang_id")

    def lang_code(self, lang: str) -> str:
        """The model's code for ISO 639-1 `lang` (`sw` -> `sw` for M2M100, `swh_Latn` for NLLB)."""
        if self.is_nllb:
            if "_" in lang:
                return lang
            if lang not in NLLB_CODES:
                raise ValueError(
                    f"no NLLB-200 code known for {lang!r}; pass the model's code itself "
                    "(e.g. --model-lang swh_Latn)"
                )
            return NLLB_CODES[lang]
        return lang

    def lang_token_id(self, lang: str) -> int:
        code = self.lang_code(lang)
        tok = self.tokenizer
        if self.is_nllb:
            tid = tok.convert_tokens_to_ids(code)
            if tid is None or tid == tok.unk_token_id:
                raise ValueError(f"{self.path}: tokenizer has no language token {code!r}")
            return tid
        try:
            return tok.get_lang_id(code)
        except KeyError as e:
            raise ValueError(f"{self.path}: M2M100 tokenizer has no language {code!r}") from e

    def encode(self, texts: list[str], src_lang: str = "en") -> list[list[int]]:
        self.tokenizer.src_lang = self.lang_code(src_lang)
        return [self.tokenizer(t)["input_ids"] for t in texts]

    def decode(self, ids: list[int]) -> str:
        special = set(self.tokenizer.all_special_ids)
        lang_ids = getattr(self.tokenizer, "id_to_lang_token", {})
        keep = [i for i in ids if i not in special and i not in lang_ids]
        return self.tokenizer.decode(keep, skip_special_tokens=True).strip()

    def translate(
        self,
        texts: list[str],
        tgt_lang: str,
        src_lang: str = "en",
        batch_size: int = 16,
        max_new_tokens: int = 256,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        with_scores: bool = False,
    ) -> list[str] | list[tuple[str, float]]:
        """Translate `texts`, batching sentences of similar length together.

        `with_scores`: (translation, mean log-prob per output token) pairs; see `mean_logprobs`.
        """
        if not texts:
            return []
        forced = self.lang_token_id(tgt_lang)
        ids = self.encode(texts, src_lang)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(texts)
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            seqs = generate(
                self.model,
                [ids[i] for i in chunk],
                forced_bos_token_id=forced,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                length_penalty=length_penalty,
                early_stopping=early_stopping,
            )
            scores = mean_logprobs(self.model, [ids[i] for i in chunk], seqs) if with_scores else None  # fmt: skip
            for j, (i, seq) in enumerate(zip(chunk, seqs, strict=True)):
                out[i] = (self.decode(seq[2:]), scores[j]) if with_scores else self.decode(seq[2:])
        return out


def mean_logprobs(model: M2M100, input_ids: list[list[int]], outputs: list[list[int]]) -> list[float]:  # fmt: skip
    """The model's own confidence in each output: the mean log-prob of its tokens after the
    forced language token (EOS included), teacher-forced on the source."""
    pad = model.args.pad_token_id
    ids, mask = pad_batch(input_ids, pad)
    dec, _ = pad_batch([o[:-1] for o in outputs], pad)
    logits = model(ids, mask, dec).astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    logp = np.array(logp)
    out = []
    for b, seq in enumerate(outputs):
        toks = seq[2:]  # after the start token and the forced language token
        vals = [float(logp[b, t + 1, tok]) for t, tok in enumerate(toks)]
        out.append(sum(vals) / len(vals) if vals else 0.0)
    return out


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[mx.array, mx.array]:
    """Right-pad token lists; return ids (B, S) and mask (B, S)."""
    S = max(len(s) for s in sequences)
    ids = np.full((len(sequences), S), pad_id, dtype=np.int32)
    mask = np.zeros((len(sequences), S), dtype=np.int32)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return mx.array(ids), mx.array(mask)


def generate(
    model: M2M100,
    input_ids: list[list[int]],
    forced_bos_token_id: int | None = None,
    max_new_tokens: int = 256,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> list[list[int]]:
    """Decoder token sequences (start token, forced BOS, ..., EOS) for each source.

    Follows `transformers`' `generate` with `do_sample=False`: greedy when `num_beams == 1`,
    otherwise beam search with the same scoring and stopping rules.
    """
    a = model.args
    ids, mask = pad_batch(input_ids, a.pad_token_id)
    enc = model.encode(ids, mask)
    if num_beams == 1:
        return _greedy(model, enc, mask, forced_bos_token_id, max_new_tokens)
    return _beam(
        model, enc, mask, forced_bos_token_id, max_new_tokens, num_beams, length_penalty,
        early_stopping,
    )  # fmt: skip


def _greedy(model, enc, mask, forced, max_new_tokens) -> list[list[int]]:
    a = model.args
    B = enc.shape[0]
    state = model.start(enc, mask)
    seqs = [[a.decoder_start_token_id] for _ in range(B)]
    live = np.arange(B)  # batch rows still decoding, as indices into seqs
    y = mx.full((B,), a.decoder_start_token_id, dtype=mx.int32)
    for step in range(max_new_tokens):
        logits = model.decode_step(y, state)
        if step == 0 and forced is not None:
            nxt = np.full(len(live), forced, dtype=np.int64)
        else:
            nxt = np.array(mx.argmax(logits.astype(mx.float32), axis=-1)).astype(np.int64)
        for r, t in zip(live, nxt, strict=True):
            seqs[r].append(int(t))
        keep = nxt != a.eos_token_id
        if not keep.any():
            break
        if not keep.all():  # drop finished rows from the batch
            rows = mx.array(np.nonzero(keep)[0])
            state.select(rows)
            live, nxt = live[keep], nxt[keep]
        y = mx.array(nxt.astype(np.int32))
    return seqs


def _candidates(logits, run_scores, forced: int | None, K: int, host: bool | None = None):
    """The `K` best continuations (beam * V + token) per source of beam search and their summed
    log-probs, best first, ties by index (like a stable sort); `forced`: the only allowed token.

    `host` (default: on the CPU) runs this in numpy, whose exp and partition are several times
    faster than MLX's CPU ones (the arrays are in host memory either way); else on the device."""
    B, nb = run_scores.shape
    V = logits.shape[-1]
    bi = np.arange(B)[:, None]
    if host or (host is None and mx.default_device() == mx.cpu):
        if forced is not None:
            logp = np.full((B * nb, V), -np.inf, np.float32)
            logp[:, forced] = 0.0
        else:
            lg = np.array(logits)  # one wait for the device per step
            shifted = lg - lg.max(-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        acc = (logp.reshape(B, nb, V) + run_scores[:, :, None]).reshape(B, nb * V)
        part = np.argpartition(-acc, K - 1, axis=1)[:, :K]
        part_lp = acc[bi, part]
    else:
        if forced is not None:
            logp = mx.where(mx.arange(V) == forced, 0.0, -mx.inf)[None, :]
            logp = mx.broadcast_to(logp, logits.shape)
        else:
            logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        acc = (logp.reshape(B, nb, V) + mx.array(run_scores)[:, :, None]).reshape(B, nb * V)
        part = mx.argpartition(-acc, kth=K - 1, axis=1)[:, :K]
        part_lp = mx.take_along_axis(acc, part, axis=1)
        mx.eval(part, part_lp)  # one wait for the device per step
        part, part_lp = np.array(part), np.array(part_lp)
    part = part.astype(np.int64)
    order = np.lexsort((part, -part_lp), axis=1)
    return part[bi, order], part_lp[bi, order].astype(np.float32)


def _beam(model, enc, mask, forced, max_new_tokens, nb, length_penalty, early_stopping):
    a = model.args
    B = enc.shape[0]
    K = 2 * nb  # candidates kept per step (one EOS id)
    max_length = 1 + max_new_tokens
    state = model.start(enc, mask, beams=nb)

    neg = np.float32(-1e9)
    run_seq = np.full((B, nb, max_length), a.pad_token_id, dtype=np.int64)
    run_seq[:, :, 0] = a.decoder_start_token_id
    run_scores = np.zeros((B, nb), np.float32)
    run_scores[:, 1:] = neg
    seqs = run_seq.copy()
    seq_len = np.ones((B, nb), np.int64)
    beam_scores = np.full((B, nb), neg, np.float32)
    finished = np.zeros((B, nb), bool)
    improvable = np.ones((B, 1), bool)
    top_mask = np.arange(K) < nb
    cur_len = 1
    live = np.arange(B)  # sources still decoding, as indices into results
    results: list[list[int]] = [[] for _ in range(B)]
    y = mx.full((B * nb,), a.decoder_start_token_id, dtype=mx.int32)
    while True:
        logits = model.decode_step(y, state).astype(mx.float32)
        V = logits.shape[-1]
        bi = np.arange(B)[:, None]
        top, top_lp = _candidates(logits, run_scores, forced if cur_len == 1 else None, K)
        src, tok = top // V, top % V
        top_seq = run_seq[bi, src]
        top_seq[:, :, cur_len] = tok
        hits = (tok == a.eos_token_id) | (cur_len + 1 >= max_length)

        # Running beams: the best `nb` candidates that did not finish.
        run_lp = top_lp + hits.astype(np.float32) * neg
        nxt = np.argsort(-run_lp, axis=1, kind="stable")[:, :nb]
        run_seq, run_scores, parent = top_seq[bi, nxt], run_lp[bi, nxt], src[bi, nxt]

        # Finished hypotheses: candidates among the top `nb` that hit EOS / max length.
        just = hits & top_mask[None, :]
        fin_lp = top_lp / np.float32((cur_len + 1 - 1) ** length_penalty)
        full = finished.all(axis=1, keepdims=True) & (early_stopping is True)
        fin_lp = fin_lp + full * neg + (~improvable) * neg + (~just) * neg
        m_seq = np.concatenate([seqs, top_seq], axis=1)
        m_len = np.concatenate([seq_len, np.full((B, K), cur_len + 1)], axis=1)
        m_score = np.concatenate([beam_scores, fin_lp.astype(np.float32)], axis=1)
        m_fin = np.concatenate([finished, just], axis=1)
        best = np.argsort(-m_score, axis=1, kind="stable")[:, :nb]
        seqs, seq_len = m_seq[bi, best], m_len[bi, best]
        beam_scores, finished = m_score[bi, best], m_fin[bi, best]

        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - 1
        else:
            best_len = cur_len - 1
        best_running = run_scores[:, :1] / np.float32(best_len**length_penalty)
        worst = np.where(finished, beam_scores.min(axis=1, keepdims=True), neg)
        improvable = improvable & np.any(best_running > worst, axis=-1, keepdims=True)
        open_beams = not (finished.all() and early_stopping is True)
        if not (improvable.any() and open_beams and not hits.all()):
            break
        # Sources whose best hypotheses can no longer change leave the batch.
        done = ~improvable[:, 0] | (finished.all(axis=1) & (early_stopping is True))
        for b in np.nonzero(done)[0]:
            results[live[b]] = seqs[b, 0, : seq_len[b, 0]].tolist()
        keep = np.nonzero(~done)[0]
        if len(keep) < B:
            live, B = live[keep], len(keep)
            run_seq, run_scores, parent = run_seq[keep], run_scores[keep], parent[keep]
            seqs, seq_len, beam_scores = seqs[keep], seq_len[keep], beam_scores[keep]
            finished, improvable = finished[keep], improvable[keep]
        rows = (parent + keep[:, None] * nb).reshape(-1)
        same = len(keep) == len(done)
        cross = False if same else mx.array(keep)
        state.select(mx.array(rows), cross)
        y = mx.array(run_seq[:, :, cur_len - 1].reshape(-1).astype(np.int32))
    for b in range(B):
        results[live[b]] = seqs[b, 0, : seq_len[b, 0]].tolist()
    return results


TINY_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "How many legs does a spider have? A spider has eight legs.",
    "Write a short list of three colours: red, green, blue.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 2025.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu.",
    "Buibui ana miguu mingapi? Buibui ana miguu minane.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Please explain why the sky is blue in two sentences.",
]


def _train_sentencepiece(texts: list[str], vocab_size: int) -> bytes:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 4),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return buf.getvalue()


def build_tiny_m2m100(
    out_dir: str | Path,
    flavor: str = "m2m100",
    seed: int = 0,
    d_model: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn_dim: int = 64,
    scale_embedding: bool = True,
    tie_word_embeddings: bool = True,
    sp_vocab_size: int = 160,
    eos_boost: float = 4.5,
    texts: list[str] | None = None,
) -> Path:
    """A tiny random M2M100 (`flavor="m2m100"`) or NLLB-200-style (`"nllb"`) checkpoint.

    Writes config.json, model.safetensors (HF names, fp32) and the tokenizer files
    (sentencepiece model trained here; M2M100: vocab.json + `__xx__` language tokens;
    NLLB: tokenizer.json with `xxx_Latn` codes). `transformers` and `load_model` open it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm_bytes = _train_sentencepiece(texts or TINY_TEXT, sp_vocab_size)
    (out_dir / "sentencepiece.bpe.model").write_bytes(spm_bytes)
    if flavor == "m2m100":
        import sentencepiece as spm
        from transformers import M2M100Tokenizer

        sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for i in range(sp.get_piece_size()):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        tok = M2M100Tokenizer(str(out_dir / "vocab.json"), str(out_dir / "sentencepiece.bpe.model"))
        vocab_size = len(vocab) + len(tok.lang_code_to_id) + tok.num_madeup_words
    elif flavor == "nllb":
        from transformers import NllbTokenizer
        from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

        tok = NllbTokenizer.from_pretrained(
            str(out_dir), extra_special_tokens=list(FAIRSEQ_LANGUAGE_CODES), src_lang="eng_Latn"
        )
        vocab_size = len(tok)
    else:
        raise ValueError(f"flavor must be 'm2m100' or 'nllb', got {flavor!r}")
    tok.save_pretrained(str(out_dir))

    config = {
        "architectures": ["M2M100ForConditionalGeneration"],
        "model_type": "m2m_100",
        "vocab_size": vocab_size,
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": ffn_dim,
        "decoder_ffn_dim": ffn_dim,
        "activation_function": "relu",
        "scale_embedding": scale_embedding,
        "tie_word_embeddings": tie_word_embeddings,
        "max_position_embeddings": 128,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))

    rng = np.random.default_rng(seed)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    emb_std = 0.3 if not scale_embedding else 0.3 / math.sqrt(d_model) * 4
    shared = normal(emb_std, vocab_size, d_model)
    w = {"model.shared.weight": shared}
    for part, n in (("encoder", layers), ("decoder", layers)):
        for i in range(n):
            p = f"model.{part}.layers.{i}."
            attns = ["self_attn"] + (["encoder_attn"] if part == "decoder" else [])
            for a in attns:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    w[p + f"{a}.{proj}.weight"] = normal(0.2, d_model, d_model)
                    w[p + f"{a}.{proj}.bias"] = normal(0.05, d_model)
                w[p + f"{a}_layer_norm.weight"] = 1 + normal(0.1, d_model)
                w[p + f"{a}_layer_norm.bias"] = normal(0.05, d_model)
            w[p + "fc1.weight"] = normal(0.2, ffn_dim, d_model)
            w[p + "fc1.bias"] = normal(0.05, ffn_dim)
            w[p + "fc2.weight"] = normal(0.2, d_model, ffn_dim)
            w[p + "fc2.bias"] = normal(0.05, d_model)
            w[p + "final_layer_norm.weight"] = 1 + normal(0.1, d_model)
            w[p + "final_layer_norm.bias"] = normal(0.05, d_model)
        w[f"model.{part}.layer_norm.weight"] = 1 + normal(0.1, d_model)
        w[f"model.{part}.layer_norm.bias"] = normal(0.05, d_model)
    # Raise the EOS logit by about `eos_boost` so random models stop at varied lengths.
    head = shared[2] if tie_word_embeddings else None
    if not tie_word_embeddings:
        # Untied checkpoints carry the shared table under all three names, plus their own head.
        w["model.encoder.embed_tokens.weight"] = shared
        w["model.decoder.embed_tokens.weight"] = shared
        w["lm_head.weight"] = normal(0.3, vocab_size, d_model)
        head = w["lm_head.weight"][2]
    w["model.decoder.layer_norm.bias"] += eos_boost * head / float(head @ head)
    mx.save_safetensors(
        str(out_dir / "model.safetensors"),
        {k: mx.array(v) for k, v in w.items()},
        metadata={"format": "pt"},
    )
    return out_dir
