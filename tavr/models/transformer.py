"""TAVRTransformer3DModel: Wan2.1's flow-matching video DiT, extended to a video reference.

Read top to bottom like the method figure:

    noisy target latent (+ masked background latent and mask) -> target tokens
    motion latent (end of the previous chunk, clean)           -> motion tokens, t = 0
    reference video latent (clean) -> token selection          -> reference tokens, t = 0
    blocks: 1. reference self-attention over [target | motion | reference] with 3D RoPE
            2. text cross-attention
            3. audio cross-attention: target tokens <- driving audio of their frame window,
               reference tokens <- reference audio of theirs
            4. feed-forward; adaLN modulation (target at t, conditions at t = 0)
    target tokens -> norm, modulation, projection -> velocity, or (prediction "sample") the clean
                     latent, with the given background outside the person mask, as a velocity

Parameter names are Wan's, so `from_wan` copies a diffusers `WanTransformer3DModel`.
Every TAVR-only branch writes into the model through a projection that starts at
zero, so with no reference, no audio and no background the output equals Wan's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tavr import flow
from tavr.config import ModelConfig, build_config
from tavr.files import load_weights, save_weights
from tavr.models.attention import Attention
from tavr.models.layers import ConditionEmbedder, FeedForward, FP32LayerNorm, TextProjection, grid_positions, rope_freqs
from tavr.models.token_selection import TokenSelector

TAVR_ONLY = ("background_embedding", "reference_embedding", "motion_embedding", "token_selector", "audio_embedder", "norm_audio", "attn_audio")


def _modulate(h: torch.Tensor, n: int, scale, shift, scale0, shift0) -> torch.Tensor:
    """adaLN on h (B, L, D): the first n (target) tokens by (scale, shift), the rest by the t = 0 pair."""
    if h.shape[1] == n:
        return h * (1 + scale) + shift
    return torch.cat([h[:, :n] * (1 + scale) + shift, h[:, n:] * (1 + scale0) + shift0], dim=1)


def _gate(y: torch.Tensor, n: int, gate, gate0) -> torch.Tensor:
    """Gate a branch output y (B, L, D): target tokens by `gate`, condition tokens by `gate0`."""
    if y.shape[1] == n:
        return y * gate
    return torch.cat([y[:, :n] * gate, y[:, n:] * gate0], dim=1)


def _patch_linear(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """A stride = kernel Conv3d as one matmul over patches: (B, C, F, H, W) -> (B, L, D).

    Same result as conv(x).flatten(2).transpose(1, 2) (up to summation order); CPU
    convolution kernels are slow for this shape.
    """
    b, c, f, h, w = x.shape
    pt, ph, pw = conv.kernel_size
    patches = x.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return F.linear(patches.reshape(b, -1, c * pt * ph * pw), conv.weight.flatten(1), conv.bias)  # (B, L, D)


class TAVRBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int, cross_attn_norm: bool, eps: float):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = Attention(dim, heads, eps)
        self.attn2 = Attention(dim, heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.norm_audio = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.attn_audio = Attention(dim, heads, eps, zero_out=True)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, n, text, mod, mod0, rope, audio=None, ref_audio=None, ref_mask=None, n_motion=0):
        """x (B, L, D): n target tokens, then n_motion motion tokens, then reference tokens.

        mod / mod0 (B, 6, D): timestep modulation of target / condition tokens.
        audio (B*F, W, D) driving windows; ref_audio (B, Fr*W, D) with ref_mask (B, 1, Lr, Fr*W).
        """
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + mod.float()).chunk(6, dim=1)
        shift0, scale0, gate0, c_shift0, c_scale0, c_gate0 = (self.scale_shift_table + mod0.float()).chunk(6, dim=1)

        # 1. reference self-attention: target, motion and reference tokens attend jointly
        h = _modulate(self.norm1(x.float()), n, scale, shift, scale0, shift0)
        x = (x.float() + _gate(self.attn1(h.type_as(x), rope=rope), n, gate, gate0)).type_as(x)

        # 2. text cross-attention
        x = x + self.attn2(self.norm2(x.float()).type_as(x), text)

        # 3. audio cross-attention: each token hears the audio of its own frame window
        if audio is not None:
            bf, _, d = audio.shape
            h = self.norm_audio(x[:, :n].float()).type_as(x).reshape(bf, -1, d)  # (B*F, hw, D)
            target = x[:, :n] + self.attn_audio(h, audio).reshape(x.shape[0], n, d)
            rest = x[:, n:]
            if ref_audio is not None:
                ref = x[:, n + n_motion :]
                ref = ref + self.attn_audio(self.norm_audio(ref.float()).type_as(x), ref_audio, mask=ref_mask)
                rest = torch.cat([x[:, n : n + n_motion], ref], dim=1)
            x = torch.cat([target, rest], dim=1)

        # 4. feed-forward
        h = _modulate(self.norm3(x.float()), n, c_scale, c_shift, c_scale0, c_shift0)
        x = (x.float() + _gate(self.ffn(h.type_as(x)).float(), n, c_gate, c_gate0)).type_as(x)
        return x


class TAVRTransformer3DModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        if c.prediction not in ("velocity", "sample"):
            raise ValueError(f"model.prediction must be 'velocity' or 'sample'; got {c.prediction!r}")
        dim = c.num_attention_heads * c.attention_head_dim
        patch = tuple(c.patch_size)
        self.patch_embedding = nn.Conv3d(c.in_channels, dim, kernel_size=patch, stride=patch)
        self.condition_embedder = ConditionEmbedder(dim, c.freq_dim, c.text_dim)
        self.blocks = nn.ModuleList(
            [TAVRBlock(dim, c.ffn_dim, c.num_attention_heads, c.cross_attn_norm, c.eps) for _ in range(c.num_layers)]
        )
        self.norm_out = FP32LayerNorm(dim, c.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, c.out_channels * math.prod(patch))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        # TAVR-only inputs
        self.background_embedding = nn.Conv3d(c.in_channels + c.mask_channels, dim, kernel_size=patch, stride=patch)
        nn.init.zeros_(self.background_embedding.weight)
        nn.init.zeros_(self.background_embedding.bias)
        self.reference_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.motion_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_selector = TokenSelector(dim, c.eps, c.selection_temperature)
        self.audio_embedder = TextProjection(c.audio_dim, dim)
        self.gradient_checkpointing = c.gradient_checkpointing

    def _tokens(self, latent: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(latent).flatten(2).transpose(1, 2)  # (B, L, D)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *,
        background: torch.Tensor | None = None,
        background_mask: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        reference_audio: torch.Tensor | None = None,
        keep_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity of the target (with prediction "sample", through its clean latent).

        hidden_states (B, C, F, H, W) noisy target latent; timestep (B,) in [0, 1000];
        encoder_hidden_states (B, Lt, text_dim) prompt embeddings.
        background (B, C, F, H, W): latent of the target background, person masked out;
        background_mask (B, mask_channels, F, H, W): 1 where the person goes.
        reference (B, C, Fr, H, W): clean reference-video latent; motion (B, C, Fm, H, W).
        audio (B, F, W, audio_dim): driving-audio windows, one per target latent frame;
        reference_audio (B, Fr, W, audio_dim). keep_ratio: share of reference tokens kept.
        Returns (B, out_channels, F, H, W).
        """
        c = self.config
        b, _, f, h, w = hidden_states.shape
        pt, ph, pw = c.patch_size
        gf, gh, gw = f // pt, h // ph, w // pw
        dev = hidden_states.device

        # target tokens, with the masked background and its mask added through a zero-initialised conv
        x = self._tokens(hidden_states)  # (B, n, D)
        if background is not None:
            if background_mask is None:
                background_mask = torch.zeros_like(background[:, : c.mask_channels])
            cond = torch.cat([background, background_mask.to(background.dtype)], dim=1)
            x = x + _patch_linear(cond, self.background_embedding)
        n = x.shape[1]
        tokens, positions = [x], [grid_positions(gf, gh, gw, device=dev).expand(b, -1, -1)]

        # motion tokens sit just before the target in time
        n_motion = 0
        if motion is not None:
            fm = motion.shape[2] // pt
            tokens.append(self._tokens(motion) + self.motion_embedding)
            positions.append(grid_positions(fm, gh, gw, t0=-fm, device=dev).expand(b, -1, -1))
            n_motion = tokens[-1].shape[1]

        # reference tokens sit apart in time, after token selection
        ref_mask = ref_audio = None
        if reference is not None:
            fr = reference.shape[2] // pt
            ref, index = self.token_selector(
                self._tokens(reference) + self.reference_embedding, keep_ratio or c.keep_ratio, generator
            )  # (B, k, D), (B, k)
            grid = grid_positions(fr, gh, gw, t0=gf + c.reference_gap, device=dev)  # (Lr, 3)
            tokens.append(ref)
            positions.append(grid[index])  # (B, k, 3)
            if reference_audio is not None and audio is not None:
                wr = reference_audio.shape[2]
                ref_audio = self.audio_embedder(reference_audio.flatten(1, 2))  # (B, Fr*W, D)
                frame_of_key = torch.arange(fr, device=dev).repeat_interleave(wr)  # (Fr*W,)
                ref_mask = ((index // (gh * gw))[:, :, None] == frame_of_key[None, None, :])[:, None]
        x = torch.cat(tokens, dim=1)  # (B, L, D)
        rope = rope_freqs(torch.cat(positions, dim=1), c.attention_head_dim, c.rope_theta)

        if audio is not None:
            if audio.shape[1] != gf:
                raise ValueError(f"audio has {audio.shape[1]} latent-frame windows; the target has {gf} latent frames")
            audio = self.audio_embedder(audio).flatten(0, 1)  # (B*F, W, D)

        temb, mod = self.condition_embedder.time(timestep)
        mod0 = mod
        if x.shape[1] > n:
            _, mod0 = self.condition_embedder.time(torch.zeros_like(timestep))
        text = self.condition_embedder.text_embedder(encoder_hidden_states)

        for block in self.blocks:
            args = (x, n, text, mod, mod0, rope, audio, ref_audio, ref_mask, n_motion)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)

        # output: target tokens only
        shift, scale = (self.scale_shift_table + temb[:, None]).chunk(2, dim=1)
        out = (self.norm_out(x[:, :n].float()) * (1 + scale) + shift).type_as(x)
        out = self.proj_out(out)  # (B, n, C_out * pt * ph * pw)
        out = out.reshape(b, gf, gh, gw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = out.flatten(6, 7).flatten(4, 5).flatten(2, 3)  # (B, C_out, F, H, W)
        if c.prediction == "velocity":
            return out
        if c.compose_background and background is not None and background_mask is not None:
            person = background_mask.amax(1, keepdim=True).clamp(0, 1).to(out.dtype)  # (B, 1, F, H, W)
            out = person * out + (1 - person) * background.to(out.dtype)
        return flow.velocity_from_sample(hidden_states, out, timestep / flow.NUM_TRAIN_TIMESTEPS)

    # ----- loading and saving -----

    @classmethod
    def from_wan(cls, wan, **overrides) -> TAVRTransformer3DModel:
        """Build from a diffusers `WanTransformer3DModel` (or its local directory), copying its weights."""
        if isinstance(wan, (str, Path)):
            from diffusers import WanTransformer3DModel

            if not Path(wan).is_dir():
                raise FileNotFoundError(f"no Wan transformer directory at {wan}")
            wan = WanTransformer3DModel.from_pretrained(str(wan), local_files_only=True)
        wc = wan.config
        if wc.image_dim is not None or wc.added_kv_proj_dim is not None:
            raise ValueError("only text-to-video Wan transformers can be converted (image_dim and added_kv_proj_dim must be None)")
        if wc.qk_norm != "rms_norm_across_heads":
            raise ValueError(f"Wan qk_norm {wc.qk_norm!r} is not supported; expected 'rms_norm_across_heads'")
        fields = {
            "patch_size": tuple(wc.patch_size), "num_attention_heads": wc.num_attention_heads,
            "attention_head_dim": wc.attention_head_dim, "in_channels": wc.in_channels,
            "out_channels": wc.out_channels or wc.in_channels, "text_dim": wc.text_dim, "freq_dim": wc.freq_dim,
            "ffn_dim": wc.ffn_dim, "num_layers": wc.num_layers, "cross_attn_norm": wc.cross_attn_norm, "eps": wc.eps,
            "prediction": "velocity", "compose_background": False,  # Wan is trained on the velocity
        }  # fmt: skip
        model = cls(dataclasses.replace(ModelConfig(), **fields, **overrides))
        param = next(wan.parameters())
        model.to(dtype=param.dtype, device=param.device)
        missing, unexpected = model.load_state_dict(wan.state_dict(), strict=False)
        wrong = [k for k in missing if not any(part in k for part in TAVR_ONLY)]
        if wrong or unexpected:
            raise ValueError(f"Wan weights do not fit: missing {wrong[:5]}, unexpected {unexpected[:5]}")
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """`config.json` + `model.safetensors` (no pickle)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))
        save_weights(self, directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TAVRTransformer3DModel:
        directory = Path(directory)
        if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
            raise FileNotFoundError(f"{directory} needs config.json and model.safetensors")
        config = build_config({"model": json.loads((directory / "config.json").read_text())}).model
        model = cls(config)
        model.load_state_dict(load_weights(directory / "model.safetensors"))
        return model
