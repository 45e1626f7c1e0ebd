//! Launching the real binaries as processes (end-to-end tests, fault suite).
