"""Op implementations: one module per op and backend (``<op>.py`` holds checks, registration and
the backend table; ``<op>_reference.py`` the plain-PyTorch ground truth; ``<op>_triton.py`` the
Triton kernels). Importing this package registers every available backend."""

from . import instance_norm  # noqa: F401
from ._optional import import_optional_backends

import_optional_backends()
