//! `kvsync check`: validate config and compile every template, offline.

use std::path::Path;

use crate::commands::{EXIT_OK, EXIT_USAGE};

pub fn run(path: &Path) -> u8 {
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    if let Err(errors) = crate::render::Renderer::compile(&config) {
        for e in errors {
            eprintln!("{e}");
        }
        return EXIT_USAGE;
    }
    println!(
        "{}: OK ({} secrets, {} files)",
        path.display(),
        config.secrets.len(),
        config.files.len()
    );
    EXIT_OK
}
