-- mTLS identities are typed: callers.cert_identity now holds "uri:<SAN URI>" or
-- "cn:<subject CN>", and a certificate's identity is looked up with its type, so a CN
-- that reads "spiffe://…" never matches a caller bound to that URI (and vice versa).
-- Untyped rows from before: one containing "://" was bound to a SAN URI (the only names
-- with a scheme), any other to a CN. The unique index on the column stays as it is.
UPDATE callers
SET cert_identity = CASE
        WHEN cert_identity LIKE '%://%' THEN 'uri:' || cert_identity
        ELSE 'cn:' || cert_identity
    END
WHERE cert_identity IS NOT NULL;
