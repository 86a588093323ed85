//! Procedurally generated tasks with verifiable answers, and the assets they need (tokenizer,
//! model config, data), so a demo runs with nothing downloaded.

pub mod arithmetic;
