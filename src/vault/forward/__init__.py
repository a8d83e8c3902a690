"""Forward: the vault sends revealed values to a payment processor for the caller.

``base`` holds the route model and the narrow protocol of the outbound HTTP client;
``routes`` the ops side (route settings checked, client keys sealed, the audited
administration); ``table`` the routes a running server serves from; ``template`` and
``filtering`` the body substitution and the answer filtering; ``usecase`` the Forward use
case; ``http`` the httpx adapter (the only module here that does network I/O).
"""
