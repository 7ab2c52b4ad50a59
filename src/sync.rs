//! One sync round: fetch every declared secret → render every file → write
//! the changed ones → run each distinct hook once.
