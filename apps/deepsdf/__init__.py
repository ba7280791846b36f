"""DeepSDF (Park et al., CVPR 2019): an auto-decoder of signed distance functions for a class of shapes.

`python -m apps.deepsdf {sample,train,reconstruct,evaluate,all}`: SDF samples from meshes (or the
built-in chair family), training of the decoder and per-shape codes, latent-code fitting and marching
cubes for held-out shapes (from full or partial samples), and the original's Chamfer evaluation.
"""
