"""Models built from parameterized layers: MLP, residual MLP, ConvNet, ViT and a character GPT."""

from traindyn.models.attention import AttentionHead, Block, FeedForward, MultiHeadAttention
from traindyn.models.convnet import ConvNet
from traindyn.models.factory import (
    MODEL_SPECS,
    ConvNetSpec,
    GPTSpec,
    MLPSpec,
    ViTSpec,
    build_model,
)
from traindyn.models.gpt import GPT
from traindyn.models.mlp import MLP, ResMLP, ResMLPBlock
from traindyn.models.vit import ViT

__all__ = [
    "GPT",
    "MLP",
    "MODEL_SPECS",
    "AttentionHead",
    "Block",
    "ConvNet",
    "ConvNetSpec",
    "FeedForward",
    "GPTSpec",
    "MLPSpec",
    "MultiHeadAttention",
    "ResMLP",
    "ResMLPBlock",
    "ViT",
    "ViTSpec",
    "build_model",
]
