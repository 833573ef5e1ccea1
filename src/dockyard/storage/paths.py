"""Where every object lives in the blob store. The store is never read as a database.

    <root>/
      blobs/
        sha256/ab/abcdef…/g1       verified, immutable blob content (generation 1)
        sha256/ab/abcdef…/g2       same digest re-uploaded after GC marked g1
      uploads/
        <upload-uuid>              bytes of an in-progress upload; moved under blobs/ once verified
"""

from __future__ import annotations


def blob_key(digest: str, generation: int) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}/g{generation}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"
