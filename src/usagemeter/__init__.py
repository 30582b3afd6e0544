"""usagemeter: record and report AI token usage and billable actions per tenant on PostgreSQL.

from usagemeter import Recorder, AsyncRecorder, EnqueueOptions, errors
"""

from __future__ import annotations

from usagemeter import errors
from usagemeter.recording.recorder import AsyncRecorder, EnqueueOptions, Recorder

__version__ = "0.1.0"

__all__ = ["AsyncRecorder", "EnqueueOptions", "Recorder", "__version__", "errors"]
