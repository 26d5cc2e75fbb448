import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Box = Tuple[float, float, float, float]
Image = Union[str, os.PathLike[str], npt.NDArray[np.uint8]]

class KpError(Exception):
    """An error kp reported; its message says what and where."""

class Face:
    """One face, in photo pixels (pixel centres at integers)."""

    @property
    def box(self) -> Optional[Box]:
        """(left, top, width, height), or None for a model that sees the whole photo."""
    @property
    def score(self) -> Optional[float]:
        """The detector's score in [0, 1] (None when no detector ran)."""
    @property
    def points5(self) -> Optional[npt.NDArray[np.float32]]:
        """(5, 2): eyes, nose tip, mouth corners, from the detector."""
    @property
    def keypoints(self) -> Optional[npt.NDArray[np.float32]]:
        """(K, 2) landmarks (None from detect)."""

class Landmarker:
    """The bundled face detector and a landmark model; safe to share between threads."""

    def __init__(self, model: str = "compact") -> None:
        """A ready model kp ships: "compact" (default), "compact-wide" or "resnet18"."""
    @staticmethod
    def from_run(path: Union[str, os.PathLike[str]]) -> "Landmarker":
        """The model of a run folder written by `kp train`."""
    @property
    def model(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    def detect(self, image: Image) -> list[Face]:
        """Every face (box, score, points5), best first."""
    def predict(self, image: Image, boxes: Optional[Sequence[Box]] = None) -> list[Face]:
        """Every detected face (or one per box) with its keypoints."""

def train(
    task: str,
    out: Union[str, os.PathLike[str]],
    data: Optional[Union[str, os.PathLike[str]]] = None,
    recipe: str = "seed",
    resume: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train into the run folder `out`; returns summary.json as a dict."""

def load_dataset(path: Union[str, os.PathLike[str]]) -> list[dict[str, Any]]:
    """Faces of a dataset: {"image", "box", "keypoints" (K, 2) float32}."""
