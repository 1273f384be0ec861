"""The callback benchmark: Quadcode-like load against the full local stack, with an audit."""
