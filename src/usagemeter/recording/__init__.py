"""The write flow: caller -> recorder faces -> writer -> PostgreSQL as the caller's role.

`recorder` holds the faces (Recorder, AsyncRecorder), `writer` the one insert algorithm,
`group_commit` and `enqueuer` the two ways of batching callers, `spool` the durable file
behind enqueue, `importing` JSON Lines, and `event` the validated event itself.
"""
