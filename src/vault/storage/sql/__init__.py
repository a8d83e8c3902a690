"""The dialect-neutral SQL core shared by the SQLite and PostgreSQL stores.

Column lists and row codecs (``codecs``), insert resolution (``resolution``), the
audit-chain computation (``audit_chain``) and what truly differs by dialect
(``dialect``). Everything here is pure: no connection, no I/O.
"""
