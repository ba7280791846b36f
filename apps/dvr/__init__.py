"""DVR (Niemeyer et al., CVPR 2020): occupancy fields rendered by ray marching with implicit depth gradients."""
