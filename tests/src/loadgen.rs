//! The Drop Cowboy simulator behind `corral-loadgen`.
