//! corral's integration and end-to-end suites live in `tests/it/` (one test
//! binary, one module per area); this library is empty.
