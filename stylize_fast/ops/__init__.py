"""Op implementations: one module per op and backend (``<op>.py`` holds checks, registration and
the backend table; ``<op>_reference.py`` the plain-PyTorch ground truth; ``<op>_triton.py`` the
Triton kernels). Importing this package registers every available backend."""

import importlib.util

from . import gram, instance_norm, mse, norm_conv, padded_conv  # noqa: F401  (each registers its backends)

# Triton is an optional dependency: its modules load only when it is installed, and an error
# inside them then raises like any other.
if importlib.util.find_spec("triton") is not None:
    from . import instance_norm_triton, norm_conv_triton, padded_conv_triton  # noqa: F401
