"""torch nn.Modules: SDF networks and their building blocks. Never imports kernels/."""
