"""Event ids: random version-4 UUIDs, never repeated, not even across a fork."""

from __future__ import annotations

import os
import uuid

from usagemeter.recording import event_ids


def test_ids_are_random_version_4_and_distinct() -> None:
    ids = [event_ids.new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_a_forked_child_never_hands_out_its_parents_spare_ids() -> None:
    event_ids.new_event_id()  # leaves spare ids drawn in this process
    spare = set(event_ids._spare_ids)
    assert spare
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the ids it would use, then leave at once
        os.close(read_end)
        drawn = [event_ids.new_event_id() for _ in range(300)]
        os.write(write_end, "\n".join(str(i) for i in drawn).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = {uuid.UUID(line) for line in pipe.read().split()}
    os.waitpid(pid, 0)
    assert len(child_ids) == 300
    assert not child_ids & spare
