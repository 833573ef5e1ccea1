"""Where every object lives in the blob store. The store is never read as a database.

    <root>/
      blobs/
        sha256/ab/abcdef…/g1-<nonce>   verified, immutable blob content (generation 1)
        sha256/ab/abcdef…/g2-<nonce>   same digest re-uploaded after GC marked g1
                                       (the nonce makes every publish attempt's key unique, so
                                       GC can reclaim a crashed attempt's orphan: domain/intents.py)
      uploads/
        <upload-uuid>              bytes of an in-progress upload; moved under blobs/ once verified
"""

from __future__ import annotations


def blob_key(digest: str, generation: int, nonce: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}/g{generation}-{nonce}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"
