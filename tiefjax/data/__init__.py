"""Training-set generation: train/test split by image, crop sampling and labels, tfds builders."""
