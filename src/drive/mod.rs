//! drive (to be written).
