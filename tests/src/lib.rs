//! End-to-end tooling for corral.
