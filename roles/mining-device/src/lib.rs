//! The hashpool mining device: a CPU Stratum V2 miner for development, tests and load.
