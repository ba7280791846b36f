"""Triangle meshes on screen: soft/hard rasterization, UV textures, shading, `render_mesh`."""
