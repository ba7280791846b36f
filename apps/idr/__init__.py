"""IDR (Yariv et al., NeurIPS 2020): multi-view surface reconstruction from images, masks and cameras."""
