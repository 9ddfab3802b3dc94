"""The read side: one layer, one direction.

``plan`` (pure: a :class:`~loom_frames.plan.Command`) -> :mod:`.cursor` (the one place a
command runs and driver errors are mapped) -> :mod:`.decode` (raw BSON -> Arrow, the
frame types) and :mod:`.validity` (values that do not fit, found on the client from the
raw BSON it holds) -> :mod:`.frames` (tables, batches, pandas / Polars) and
:mod:`.objects` (model objects, dicts). :mod:`.infer` infers a schema where no model
gives one. Nothing here imports back up into the query layer, and importing this package
imports none of its modules.
"""
