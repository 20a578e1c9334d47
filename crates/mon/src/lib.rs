//! The monitor daemon (work in progress).
