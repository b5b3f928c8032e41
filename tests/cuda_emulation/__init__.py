"""CUDA device code run on the CPU under a host emulation of CUDA: python -m tests.cuda_emulation."""
