"""Everything that writes: objects and frames, through one outcome mechanism.

Data flows one way: an object (``persist``) or a frame (``insert_dataframe``,
``upsert_dataframe``) is held to its model, encoded to BSON, and written; each write's
outcome is classified in one place.

==============  ==============================================================
module          concern
==============  ==============================================================
``objects``     ``persist()`` / ``persist_many()`` / ``delete()``; completing a write
                whose outcome was unknown
``frames``      ``insert_dataframe``, ``WriteResult``, batching, the per-row ledger
``upsert``      ``upsert_dataframe``: unique-index rule, key lookup, change detection
``prepare``     a frame held to its model: columns, nulls, defaults, markers, ids
``casts``       safe casts of frame columns to the model's storage types
``arrow_bson``  Arrow columns -> BSON documents, vectorised
``outcome``     one bulk write -> per operation: done, rejected or unknown
==============  ==============================================================
"""
