"""Flax networks: the AlexNet encoder, the TiefVision heads, the torchvision weight port."""
