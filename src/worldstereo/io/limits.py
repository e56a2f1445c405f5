"""Size limits the file readers enforce *before* allocating (documented in ``docs/reliability.md``).

A file may declare sizes it does not contain (a PLY header announcing 10^12 vertices, an ``.npy``
header with a shape of 10^15 elements, a zip member that inflates to terabytes, a PNG that claims
100000 x 100000 pixels). The readers compare every declared size with these limits and with the
bytes actually present, and raise :class:`~worldstereo.io.errors.InputFileError` instead of trying
to allocate. The limits are far above what the models use (480 x 832 frames, at most a few hundred
frames) and are plain module constants, so a caller with larger data can raise them.
"""

from __future__ import annotations

__all__ = [
    "MAX_ARRAY_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_TEXT_BYTES",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_FRAMES",
    "MAX_CAMERAS",
]

#: largest decoded image, in pixels (about 134 million, e.g. 16384 x 8192); PIL's own
#: decompression-bomb check (an error above twice ``PIL.Image.MAX_IMAGE_PIXELS``) applies too
MAX_IMAGE_PIXELS = 1 << 27
#: largest image width or height, in pixels, accepted from a file (camera files, headers)
MAX_IMAGE_SIDE = 1 << 16
#: largest array loaded from one ``.npy`` file or ``.npz`` member (decompressed), in bytes
MAX_ARRAY_BYTES = 4 << 30
#: largest decoded video (frames x height x width x 3 bytes of RGB)
MAX_VIDEO_BYTES = 8 << 30
#: most frames decoded from one video
MAX_VIDEO_FRAMES = 100_000
#: largest JSON / text file parsed (camera files, COLMAP text models), in bytes
MAX_TEXT_BYTES = 512 << 20
#: most cameras (poses) read from one camera file
MAX_CAMERAS = 1_000_000
