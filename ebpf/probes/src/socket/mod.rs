//! Programs on sockets rather than on functions.

pub mod propagate;
