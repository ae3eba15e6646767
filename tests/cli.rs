//! The offline verbs end to end: the real binary, its output and exit codes.
