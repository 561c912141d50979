//! recover (to be written).
