pub mod process;
pub mod peer;
