//! Sources: what a snapshot reads. Each source type turns its data into one
//! archive (a tar stream) and an index; `fs` serves `directory` and `files`.

pub mod fs;
