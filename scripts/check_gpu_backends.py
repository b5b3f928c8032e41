"""Exit 1 unless both GPU backends (cuda, triton) are available; prints why one is not.
Step 2 of scripts/verify_gpu.sh, after the CUDA build.

    python scripts/check_gpu_backends.py
"""

from __future__ import annotations

import sys


def main() -> int:
    import stylize_fast as sf

    available = sf.backends.available()
    print(available)
    missing = [b for b in ("cuda", "triton") if not available[b]]
    for b in missing:
        print(b, "unavailable:", sf.backends.unavailable_reason(b))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
