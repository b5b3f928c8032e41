"""Inference: the :class:`Stylizer` engine, file dispatch (images batched, videos), image and
video I/O, tiling, progress bars, allocator tuning."""

from .allocator import is_tuned, tune_allocator
from .dispatch import RunStats
from .engine import DTYPES, Stylizer, blend, preserve_color
from .files import collect_jobs
from .image_io import IMAGE_EXTENSIONS, ImageReadError, LoadedImage, read_image, write_image
from .tiling import stylize_tiled
from .video import VIDEO_EXTENSIONS, stylize_video, video_backend_available

__all__ = ["Stylizer", "RunStats", "DTYPES", "blend", "preserve_color", "tune_allocator",
           "is_tuned", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "ImageReadError", "LoadedImage",
           "read_image", "write_image", "stylize_tiled", "stylize_video",
           "video_backend_available", "collect_jobs"]

