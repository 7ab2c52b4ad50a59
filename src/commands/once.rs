//! `kvsync once`: one sync round, then exit.
