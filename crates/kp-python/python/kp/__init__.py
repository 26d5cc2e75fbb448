"""kp: face detection and facial landmarks from Rust, numpy in and out.

>>> import kp
>>> lm = kp.Landmarker()                      # bundled YuNet detector + ready 68-point model
>>> faces = lm.predict("group.jpg")           # or an HxWx3 uint8 RGB array
>>> faces[0].keypoints.shape, faces[0].keypoints.dtype
((68, 2), dtype('float32'))
"""

from ._kp import Face, KpError, Landmarker, __version__, load_dataset, train

__all__ = ["Face", "KpError", "Landmarker", "__version__", "load_dataset", "train"]
