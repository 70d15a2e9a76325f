"""Datasets, the three trainers, ONNX export, the gate and publishing."""
