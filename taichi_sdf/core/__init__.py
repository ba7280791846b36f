"""The Taichi runtime (`init`), the Taichi<->torch bridge (`KernelOp`), argument validation and dtypes."""
