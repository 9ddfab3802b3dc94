"""Alias of :mod:`loom_frames` so the guide's ``import loom as lm`` works verbatim."""

from loom_frames import *  # noqa: F403
from loom_frames import __all__, __version__  # noqa: F401
