//! Operator tasks that work on the database file as a whole.

pub mod backup;
pub mod doctor;
pub mod verify;
