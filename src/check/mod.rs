//! check (to be written).
