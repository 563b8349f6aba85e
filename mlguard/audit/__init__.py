"""The audit trail: sealed, hash-chained, signed records of every guarded exchange.

record.py (canonical bytes) > seal.py (AES-256-GCM envelope, per-subject data keys) > chain.py (RFC 6962
domain-separated hashes, signed checkpoints) > store/ (SQLite, PostgreSQL; one contract) > writer.py (group
commit) > stage.py (the pipeline stage). verify.py needs no decryption key; reader.py / export.py decrypt.
"""
