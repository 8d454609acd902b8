"""Models: the MAE ViT and the segmenters built on it (plus the ResNet-50 baseline)."""

from mixsweep.models.mae import PRESETS, MAEPreset, MaskedAutoencoderViT, build_mae, get_preset, load_mae_checkpoint
from mixsweep.models.segment import SEG_HEADS, MAESegmenter, ResNet50Segmenter, build_segmenter

__all__ = [
    "PRESETS",
    "SEG_HEADS",
    "MAEPreset",
    "MAESegmenter",
    "MaskedAutoencoderViT",
    "ResNet50Segmenter",
    "build_mae",
    "build_segmenter",
    "get_preset",
    "load_mae_checkpoint",
]
