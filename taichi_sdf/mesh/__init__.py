"""Triangle meshes: soft/hard rasterization, UV textures, shading, `render_mesh`; connectivity for the
mesh regularisers (`topology`) and OBJ + MTL + PNG / coloured PLY writers (`export`)."""
