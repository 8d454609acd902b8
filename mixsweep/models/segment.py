"""Segmentation models: the MAE fine-tuned end to end at mask ratio 0, and a ResNet-50 baseline.

The paper's head ("decoder") runs the whole MAE decoder over every patch and reads a new per-patch linear
projection as p·p·num_classes logits. The "linear" head drops the decoder and projects the encoder's patch
tokens directly. The "probe" head is the linear head on a frozen encoder (the segmentation analogue of MAE's
linear probing): the encoder runs in eval mode under no_grad and only the head trains. All return
full-resolution logits (N, num_classes, H, W).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch import Tensor

from mixsweep.checkpoint import read_state_dict
from mixsweep.errors import MixsweepError
from mixsweep.models.mae import MaskedAutoencoderViT, _few, build_mae, load_mae_checkpoint, vit_group_matcher

SEG_HEADS = ("decoder", "linear", "probe")
FROZEN_HEADS = ("probe",)  # heads whose encoder is frozen: only the head trains
SEG_KINDS = ("mae", "scratch", "resnet50", "resnet18")
RESNETS = {"resnet50": 2048, "resnet18": 512}  # torchvision arch -> channels out of layer4
_SKIP_STAGES = ("layer2", "layer3", "layer4")  # strides 8, 16, 32; finest first, as FCNSkipHead wants

# Decoder-side modules the encoder-only heads never call; removed so DDP sees no unused parameters.
_DECODER_PARTS = ("decoder_embed", "mask_token", "decoder_pos_embed", "decoder_blocks", "decoder_norm")


class MAESegmenter(nn.Module):
    """Per-pixel class logits from an MAE at mask ratio 0.

    Takes ownership of `mae`: the pixel projection `decoder_pred` is removed (and, for the linear and probe
    heads, the whole decoder), so every remaining trainable parameter gets a gradient.

    head "probe" freezes the encoder: its parameters get requires_grad False (optimizers built from trainable
    parameters leave them out), it stays in eval mode whatever `train()` is asked, and it runs under no_grad,
    so no activations are kept for backward. Its patch tokens pass a BatchNorm without affine parameters (as in
    MAE's linear probe) before the linear projection: it standardises each channel, so the features of every
    pre-training, and of a random encoder, reach the head at one scale and one recipe (lr) fits all probes of a
    sweep. A per-token LayerNorm would not: the tokens already leave the encoder's final LayerNorm, whose
    per-channel gain and bias set the channels' scales and offsets. The norm has no parameters, only running
    statistics; in eval mode it is a fixed per-channel affine map (it folds into the linear layer), so padded
    evaluation batches stay batch-independent.
    """

    def __init__(self, mae: MaskedAutoencoderViT, num_classes: int = 3, head: str = "decoder") -> None:
        super().__init__()
        if head not in SEG_HEADS:
            raise MixsweepError(f"unknown segmentation head {head!r}; choose one of {', '.join(SEG_HEADS)}")
        self.head_kind = head
        self.num_classes = num_classes
        self.frozen_encoder = head in FROZEN_HEADS
        p = mae.patch_size
        mae.decoder_pred = None
        if head == "decoder":
            in_dim = mae.preset.decoder_embed_dim  # tokens come out of decoder_norm
        else:
            for name in _DECODER_PARTS:
                setattr(mae, name, None)
            in_dim = mae.preset.embed_dim  # tokens come out of the encoder's final LayerNorm
        if self.frozen_encoder:
            mae.requires_grad_(False)
            mae.eval()
            # Only the probe has it, so the other heads' state dicts (and checkpoints) are unchanged.
            self.feature_norm = nn.BatchNorm1d(in_dim, eps=1e-6, affine=False)
        self.mae = mae
        self.head = nn.Linear(in_dim, p * p * num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> MAESegmenter:
        super().train(mode)
        if self.frozen_encoder:
            self.mae.eval()  # a frozen encoder always computes its test-time features
        return self

    def no_weight_decay(self) -> set[str]:
        return {f"mae.{k}" for k in self.mae.no_weight_decay() if getattr(self.mae, k, None) is not None}

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return vit_group_matcher("mae.")  # the new head is matched by neither: the last layer, full lr

    def forward(self, imgs: Tensor) -> Tensor:
        if self.frozen_encoder:
            with torch.no_grad():
                latent, _, ids_restore = self.mae.forward_encoder(imgs, 0.0)
        else:
            latent, _, ids_restore = self.mae.forward_encoder(imgs, 0.0)
        if self.head_kind == "decoder":
            tokens = self.mae.decoder_features(latent, ids_restore)
        else:
            tokens = latent[:, 1:, :]  # ratio 0 keeps patches in image order; drop cls
        if self.frozen_encoder:
            # Each channel over all tokens of the batch: BatchNorm1d on (tokens, channels). Not a transpose to
            # (N, C, L): aot_autograd's decomposition of the head's matmul then views a non-contiguous tensor.
            n, length, dim = tokens.shape
            tokens = self.feature_norm(tokens.reshape(n * length, dim)).view(n, length, dim)
        logits = self.head(tokens)
        return self.mae.unpatchify(logits, channels=self.num_classes)


class FCNSkipHead(nn.Module):
    """FCN-8s-style head: a 1×1 score conv per backbone stage; each coarser score map is upsampled (bilinear) to
    the next finer stage and added to its score. The result is at the finest stage's stride.

    `in_chs` maps stage name -> channels, finest stage first.
    """

    def __init__(self, in_chs: Mapping[str, int], num_classes: int = 3) -> None:
        super().__init__()
        names = list(in_chs)
        self.score = nn.ModuleDict()
        for name in names[:-1]:
            # Skip scores start at zero, as in FCN: at init the head is the coarse one and the skips learn only
            # the corrections. No bias: the coarsest score's bias is the one class prior of the sum.
            conv = nn.Conv2d(in_chs[name], num_classes, kernel_size=1, bias=False)
            nn.init.zeros_(conv.weight)
            self.score[name] = conv
        self.score[names[-1]] = nn.Conv2d(in_chs[names[-1]], num_classes, kernel_size=1)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        names = list(self.score)
        out = self.score[names[-1]](feats[names[-1]])
        for name in reversed(names[:-1]):
            x = feats[name]
            # Upsample to the finer map's own size, not ×2: odd input sizes round differently per stage.
            out = self.score[name](x) + F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class ResNetSegmenter(nn.Module):
    """torchvision ResNet-50 (or -18) with an FCN-8s-style head: 1×1 scores of layer2 (H/8), layer3 (H/16) and
    layer4 (H/32), summed at H/8, then bilinear upsampling to full size.

    A plain layer4 head has output stride 32: a 2×2 map at the demo's 64 px, too coarse to place a pet.
    The skips give stride 8 for both arches (28×28 at 224 px); dilation would too, but torchvision's
    `replace_stride_with_dilation` works for Bottleneck (ResNet-50) only.
    """

    def __init__(self, num_classes: int = 3, weights_path: str | Path | None = None, arch: str = "resnet50") -> None:
        super().__init__()
        if arch not in RESNETS:
            raise MixsweepError(f"unknown ResNet {arch!r}; choose one of {', '.join(RESNETS)}")
        self.arch = arch
        net = getattr(torchvision.models, arch)(weights=None)
        if weights_path is not None:
            _load_resnet_weights(net, weights_path, arch)
        # avgpool goes too: it would leave a C×1×1 map, useless for dense prediction.
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.backbone = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
        self.classifier = FCNSkipHead({n: _stage_channels(getattr(net, n)) for n in _SKIP_STAGES},
                                      num_classes=num_classes)

    def forward_features(self, imgs: Tensor) -> dict[str, Tensor]:
        """The backbone's outputs of the stages the head scores (`_SKIP_STAGES`), by stage name."""
        feats = {}
        x = imgs
        for name, module in self.backbone.named_children():
            x = module(x)
            if name in _SKIP_STAGES:
                feats[name] = x
        return feats

    def forward(self, imgs: Tensor) -> Tensor:
        logits = self.classifier(self.forward_features(imgs))
        return F.interpolate(logits, size=imgs.shape[-2:], mode="bilinear", align_corners=False)


ResNet50Segmenter = ResNetSegmenter  # the paper's baseline, the default arch


def _stage_channels(stage: nn.Sequential) -> int:
    """Channels out of a torchvision ResNet stage: its last block's last BatchNorm (bn2 in a BasicBlock, bn3 in a
    Bottleneck; a downsample branch sits in the first block only)."""
    return [m for m in stage[-1].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _load_resnet_weights(net: nn.Module, path: str | Path, arch: str = "resnet50") -> None:
    """Strict on the backbone keys; `fc.*` may be present or not, it is dropped anyway."""
    sd = read_state_dict(path)
    own = net.state_dict()
    wanted = [k for k in own if not k.startswith("fc.")]
    missing = [k for k in wanted if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise MixsweepError(
            f"{path}: not {arch} weights; missing {len(missing)} keys: {_few(missing) or '-'}; "
            f"unexpected {len(unexpected)}: {_few(unexpected) or '-'}"
        )
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wanted if sd[k].shape != own[k].shape]
    if bad:
        raise MixsweepError(f"{path}: shape mismatch (file vs model): {_few(bad, 3)}")
    net.load_state_dict({k: sd[k] for k in wanted}, strict=False)


def build_segmenter(
    kind: str,
    preset: str = "base",
    head: str = "decoder",
    num_classes: int = 3,
    mae_checkpoint: str | Path | Mapping | None = None,
    mae_init: str = "full",
    resnet_weights: str | Path | None = None,
) -> nn.Module:
    """kind "mae": MAE weights from `mae_checkpoint` (file or state dict); "scratch": random init; "resnet50" / "resnet18".
    A ResNet has its own head: `head` is for the MAE kinds, and a frozen-encoder head ("probe") is refused for it."""
    if kind in RESNETS:
        if head in FROZEN_HEADS:
            raise MixsweepError(f"head {head!r} freezes an MAE encoder; model {kind!r} has none (use 'mae' or "
                                "'scratch')")
        return ResNetSegmenter(num_classes, resnet_weights, arch=kind)
    if kind not in SEG_KINDS:
        raise MixsweepError(f"unknown model kind {kind!r}; choose one of {', '.join(SEG_KINDS)}")
    mae = build_mae(preset)
    if kind == "mae":
        if mae_checkpoint is None:
            raise MixsweepError("model kind 'mae' needs an MAE checkpoint (mae_checkpoint)")
        load_mae_checkpoint(mae, mae_checkpoint, mae_init)
    return MAESegmenter(mae, num_classes=num_classes, head=head)
