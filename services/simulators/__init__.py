"""Local stand-ins for the outside world (Quadcode, Swapgate), for demos and tests."""
