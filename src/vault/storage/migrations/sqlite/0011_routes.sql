-- Forward routes: where the vault may send revealed values (a payment processor's API),
-- configured by ops with `vaultctl routes add`, never by a caller. A route's client
-- private key is sealed (AES-256-GCM) under the service key route-secrets:1, which the
-- master key wraps like every other key.
CREATE TABLE routes (
    name               TEXT PRIMARY KEY,   -- what a ForwardRequest names
    url                TEXT NOT NULL,      -- the https URL every forward on the route goes to
    method             TEXT NOT NULL,      -- the HTTP method (POST, PUT, ...)
    ca_pem             BLOB,               -- CA certificates (PEM) the processor must chain to; NULL = system roots
    client_cert_pem    BLOB,               -- client certificate chain (PEM) for mTLS; NULL = none
    client_key_sealed  BLOB,               -- the client certificate's private key (PEM), sealed under route-secrets:1 with the route name as AAD
    allow_headers      TEXT NOT NULL,      -- comma-separated lower-case header names a caller may send and receive
    timeout            REAL NOT NULL,      -- seconds a forward may take in all (connect, send, answer)
    max_response_bytes INTEGER NOT NULL,   -- largest processor answer body returned
    tokenize_paths     TEXT NOT NULL,      -- comma-separated JSON paths of the answer whose PANs are tokenized
    created_at         REAL NOT NULL,      -- unix seconds the route was (re)configured
    revision           INTEGER NOT NULL    -- bumped on each change; a running server rebuilds its client when it moves
);

-- Which routes a caller may forward to (default deny: a caller with no row may use none).
CREATE TABLE caller_routes (
    caller     TEXT NOT NULL,   -- callers.name
    route      TEXT NOT NULL,   -- routes.name (a route removed later simply stops matching)
    created_at REAL NOT NULL,   -- unix seconds the permission was given
    PRIMARY KEY (caller, route)
);
