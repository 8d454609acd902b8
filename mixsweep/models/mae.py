"""Masked autoencoder with a ViT encoder and a light ViT decoder (He et al. 2021), on timm blocks.

Parameter names match the official MAE checkpoints (`mae_pretrain_vit_base.pth`, encoder only, and
`mae_visualize_vit_base.pth`, with decoder), so those files load strictly. Positional embeddings are fixed
2-D sin-cos tables stored as frozen parameters, as in the reference, because the official files carry them.

Everything in `forward` is shape-driven: no `.item()`, no branch on tensor values, so it traces under
`torch.compile(fullgraph=True)`. The one Python branch (mask ratio 0) depends on an argument, not on data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor

from mixsweep.checkpoint import clean_state_dict, read_state_dict
from mixsweep.errors import MixsweepError


@dataclass(frozen=True)
class MAEPreset:
    """Encoder and decoder sizes of one MAE (paper Table 1 is `base`)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


PRESETS: dict[str, MAEPreset] = {
    "base": MAEPreset(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                      decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0),
    "small": MAEPreset(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                       decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8, mlp_ratio=4.0),
    # CPU tests and the demo: 8x8 grid of 8-px patches, two encoder blocks, one decoder block.
    "tiny": MAEPreset(img_size=64, patch_size=8, embed_dim=96, depth=2, num_heads=3,
                      decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0),
}


def get_preset(name_or_preset: str | MAEPreset) -> MAEPreset:
    """A preset by name, or the preset itself."""
    if isinstance(name_or_preset, MAEPreset):
        return name_or_preset
    try:
        return PRESETS[name_or_preset]
    except (KeyError, TypeError):
        raise MixsweepError(
            f"unknown MAE preset {name_or_preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def sincos_pos_embed_1d(dim: int, pos: Tensor) -> Tensor:
    """(len(pos), dim): sin of pos·ω in the first half, cos in the second, ω = 10000^(-k/(dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = pos.to(torch.float64).reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """(1 + grid², dim) fixed table in row-major patch order, with a zero row first for the cls token.

    The first half of each row encodes the column index, the second half the row index: the reference
    builds its grid as meshgrid(w, h) and we keep its layout so fresh tables equal the official ones.
    Not timm's build_sincos2d_pos_embed: it orders the columns [sin row, sin col, cos row, cos col] and
    computes in fp32, up to ~7e-7 off the reference (tests/test_models.py).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat(
        [sincos_pos_embed_1d(dim // 2, cols.flatten()), sincos_pos_embed_1d(dim // 2, rows.flatten())], dim=1
    )
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.float()


def vit_group_matcher(prefix: str = "") -> dict[str, str]:
    """The layers of layer-wise lr decay, in timm's group_matcher form (timm.optim.param_groups_layer_decay):
    the embeddings, then encoder block i; what matches neither (final norm, decoder, head) comes last, as
    in the reference MAE fine-tuning code. `prefix`: where the MAE sits in a bigger model ("mae.")."""
    p = re.escape(prefix)
    return {"stem": rf"^{p}(?:cls_token|pos_embed|patch_embed\.)", "blocks": rf"^{p}blocks\.(\d+)\."}


class MaskedAutoencoderViT(nn.Module):
    """MAE: ViT encoder over the visible patches, ViT decoder over all patches, pixel prediction per patch."""

    def __init__(self, preset: MAEPreset | str, norm_pix_loss: bool = True) -> None:
        super().__init__()
        preset = get_preset(preset)
        self.preset = preset
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = preset.patch_size
        self.num_patches = preset.num_patches
        # timm's defaults register no LayerScale / qk-norm params (Identity), so the state dict is exactly
        # the reference's.
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        block = partial(Block, mlp_ratio=preset.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)

        # Encoder.
        self.patch_embed = PatchEmbed(preset.img_size, preset.patch_size, 3, preset.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, preset.embed_dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_patches + 1, preset.embed_dim), requires_grad=False
        )
        self.blocks = nn.ModuleList([block(preset.embed_dim, preset.num_heads) for _ in range(preset.depth)])
        self.norm = norm_layer(preset.embed_dim)

        # Decoder.
        dec = preset.decoder_embed_dim
        self.decoder_embed = nn.Linear(preset.embed_dim, dec, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dec), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [block(dec, preset.decoder_num_heads) for _ in range(preset.decoder_depth)]
        )
        self.decoder_norm = norm_layer(dec)
        self.decoder_pred = nn.Linear(dec, preset.patch_size**2 * 3, bias=True)

        self.init_weights()

    def init_weights(self) -> None:
        """The reference initialisation: sin-cos tables, xavier-uniform linears, N(0, .02) tokens."""
        grid = self.preset.grid_size
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], grid).unsqueeze(0))
        self.decoder_pos_embed.data.copy_(
            sincos_pos_embed_2d(self.decoder_pos_embed.shape[-1], grid).unsqueeze(0)
        )
        # The patch projection is a linear map on flattened patches, so treat it like one.
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_module)

    def no_weight_decay(self) -> set[str]:
        # Tokens and position tables are not weights: decaying them only pulls them towards zero.
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return vit_group_matcher()

    # Patch layout -------------------------------------------------------------------------------------

    def patchify(self, imgs: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, p·p·C), each patch flattened row by row, channels last (reference order)."""
        n, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor, channels: int = 3) -> Tensor:
        """(N, L, p·p·channels) -> (N, channels, H, W); the inverse of `patchify` on a square grid."""
        n, length, _ = x.shape
        p = self.patch_size
        g = int(round(length**0.5))
        x = x.reshape(n, g, g, p, p, channels)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, channels, g * p, g * p)

    # Masking ------------------------------------------------------------------------------------------

    def random_masking(
        self, x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Keep the first int(L·(1 - mask_ratio)) patches of argsort(noise); noise ~ U[0, 1) if not given.

        Returns the kept tokens (N, L_keep, D) in shuffled order, the mask (N, L) with 0 kept / 1 masked in
        the original order, and ids_restore (N, L) that puts shuffled tokens back in place. At ratio 0 no
        shuffle happens (noise is ignored): all tokens stay in order and ids_restore is arange.
        """
        n, length, dim = x.shape
        if mask_ratio == 0:
            ids_restore = torch.arange(length, device=x.device).expand(n, length)
            return x, torch.zeros(n, length, device=x.device), ids_restore
        len_keep = int(length * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        # A patch is kept iff its rank in the shuffle is below len_keep.
        mask = (ids_restore >= len_keep).float()
        return x_kept, mask, ids_restore

    # Forward ------------------------------------------------------------------------------------------

    def forward_encoder(
        self, imgs: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(latent (N, 1 + L_keep, D) with the cls token first, mask (N, L), ids_restore (N, L))."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def decoder_features(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """(N, L, decoder_dim) after decoder_norm, patches in image order, cls dropped; no pixel projection."""
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_norm(x)[:, 1:, :]

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """(N, L, p·p·3) predicted (normalised, if norm_pix_loss) pixels per patch."""
        return self.decoder_pred(self.decoder_features(latent, ids_restore))

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Per-patch MSE averaged over masked patches; over all patches when nothing is masked (ratio 0).

        With norm_pix_loss the target patch is normalised by its own mean and (unbiased) variance, eps 1e-6.
        """
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        n_masked = mask.sum()
        # clamp keeps the unused branch finite, so `where` passes no NaN gradient.
        masked_mean = (per_patch * mask).sum() / n_masked.clamp_min(1)
        return torch.where(n_masked > 0, masked_mean, per_patch.mean())

    def forward(
        self, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, pred (N, L, p·p·3), mask (N, L))."""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_mae(preset: str | MAEPreset = "base", norm_pix_loss: bool = True) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(get_preset(preset), norm_pix_loss=norm_pix_loss)


# Checkpoints ----------------------------------------------------------------------------------------------

MAE_INITS = ("full", "encoder")


def is_decoder_key(name: str) -> bool:
    """Keys that an encoder-only checkpoint (mae_pretrain_vit_base.pth) does not have."""
    return name.startswith("decoder_") or name == "mask_token"


def _few(keys: list[str], k: int = 4) -> str:
    return ", ".join(keys[:k]) + (f" (+{len(keys) - k} more)" if len(keys) > k else "")


def load_mae_checkpoint(
    model: MaskedAutoencoderViT, path: str | Path | Mapping[str, Tensor], init: str = "full"
) -> dict:
    """Load MAE weights into `model`; returns {"loaded": number of tensors, "skipped": [file keys unused]}.

    `path` is a file ({"model": sd} or a bare sd, DDP/compile prefixes stripped) or a state dict.
    init "full": every key, decoder included, must match (mae_visualize_vit_base.pth or a mixsweep
    pre-training checkpoint). init "encoder": the encoder keys must match (mae_pretrain_vit_base.pth); decoder
    keys in the file are skipped and the model's decoder keeps its fresh initialisation.
    """
    if init not in MAE_INITS:
        raise MixsweepError(f"unknown MAE init {init!r}; choose one of {', '.join(MAE_INITS)}")
    if isinstance(path, Mapping):
        source = "<state dict>"
        sd = clean_state_dict(path)
    else:
        source = str(path)
        sd = read_state_dict(path)

    own = model.state_dict()
    wanted = [k for k in own if init == "full" or not is_decoder_key(k)]
    skipped = [k for k in sd if init == "encoder" and is_decoder_key(k) and k not in wanted]
    missing = [k for k in wanted if k not in sd]
    unexpected = [k for k in sd if k not in own and k not in skipped]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_few(unexpected)}")
        raise MixsweepError(f"{source}: does not fit the MAE for init={init!r}; {'; '.join(parts)}")
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wanted if sd[k].shape != own[k].shape]
    if bad:
        raise MixsweepError(f"{source}: shape mismatch (file vs model) for {len(bad)} keys: {_few(bad, 3)}")

    model.load_state_dict({k: sd[k] for k in wanted}, strict=init == "full")
    return {"loaded": len(wanted), "skipped": skipped}
