"""SQL definitions (functions and the types they take) that ``schema migrate`` re-applies
whenever a file's checksum differs from the one recorded in ``schema_definitions``."""
