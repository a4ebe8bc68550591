"""The one error type of the calibration package."""
from __future__ import annotations


class CalibrationError(ValueError):
    """Bad calibration data or bad input to a geometry function; the message names the problem."""
