"""The imports the README promises stay where they are, whatever moves inside the package."""

from __future__ import annotations

import subprocess
import sys


def test_the_package_root_exports_the_recorder_faces_and_errors() -> None:
    import usagemeter
    from usagemeter import AsyncRecorder, EnqueueOptions, Recorder, errors
    from usagemeter.recording import recorder

    assert (Recorder, AsyncRecorder, EnqueueOptions) == (
        recorder.Recorder,
        recorder.AsyncRecorder,
        recorder.EnqueueOptions,
    )
    assert issubclass(errors.EventRejected, errors.UsagemeterError)
    assert sorted(usagemeter.__all__) == ["AsyncRecorder", "EnqueueOptions", "Recorder", "__version__", "errors"]


def test_importing_the_package_starts_nothing() -> None:
    """No thread, pool or settings read at import: a library must be cheap and inert to import."""
    probe = "import threading, usagemeter; print(threading.active_count())"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "1"
