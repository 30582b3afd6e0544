"""Event ids (random UUIDs, version 4), drawn from the OS's randomness a few hundred at a time.

`uuid.uuid4()` reads 16 bytes from the OS per call; each read gives up the interpreter lock, and
with the group-commit writers busy a caller then waited to get it back: ids took a third of an
asyncio caller's time at 20k events/s. One read of 4 KiB gives 256 ids, just as random.
"""

from __future__ import annotations

import os
import uuid

ID_BYTES = 16
IDS_PER_READ = 256

_spare_ids: list[uuid.UUID] = []
os.register_at_fork(after_in_child=_spare_ids.clear)  # a forked child must never hand out its parent's ids


def new_event_id() -> uuid.UUID:
    """A random UUID (version 4, RFC 9562 variant), as uuid.uuid4() makes them."""
    try:
        return _spare_ids.pop()  # atomic under the interpreter lock: no two threads get the same id
    except IndexError:
        raw = os.urandom(ID_BYTES * IDS_PER_READ)
        fresh = [uuid.UUID(bytes=raw[start : start + ID_BYTES], version=4) for start in range(0, len(raw), ID_BYTES)]
        _spare_ids.extend(fresh[1:])
        return fresh[0]
