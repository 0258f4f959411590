"""s3prl integration: hub entries, registration in s3prl (post-import hooks, start-up hook),
the narrow compatibility shims for s3prl 0.4.18, the opt-in exact resume, the third-party
warnings our commands filter, and running s3prl's runner / reading what it writes."""
