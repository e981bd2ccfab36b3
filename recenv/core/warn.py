"""recenv's user-facing warnings, attributed to the user's line.

``warnings.warn(..., stacklevel=2)`` names the caller of the function that warns, which inside
recenv is usually recenv's own code: the market's build warning named the scenario builder's
``return BatchedMarket(...)`` whether the user called ``recenv.make``, ``recenv.make_vec``, a
scenario's ``parallel_env`` or ``BatchedMarket`` itself. :func:`warn` names the first frame
outside the ``recenv`` package instead, however deep the call came from (Python 3.12's
``skip_file_prefixes`` does this, but recenv supports 3.10).
"""

from __future__ import annotations

import os
import sys
import warnings

# recenv/ (this file is recenv/core/warn.py), as code objects of the package spell their files.
PACKAGE_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel``, for a ``warnings.warn`` call in the function that called this one,
    of the first frame outside the recenv package; the outermost frame when every frame is
    inside (``python -m recenv.scenarios.market``)."""
    frame = sys._getframe(1)  # the function that will call warnings.warn: stacklevel 1
    level = 1
    while frame.f_code.co_filename.startswith(PACKAGE_DIR) and frame.f_back is not None:
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame outside recenv."""
    warnings.warn(message, category, stacklevel=outside_stacklevel())
