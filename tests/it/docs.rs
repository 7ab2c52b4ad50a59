//! The documentation's examples stay true: every TOML block in README.md parses as a kvsync config, and every config in `config/`
//! loads and compiles its templates.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fenced ```toml blocks of a Markdown file.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

fn check_markdown(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let blocks = toml_blocks(&text);
    assert!(!blocks.is_empty(), "{} has TOML examples", file.display());
    for (i, block) in blocks.iter().enumerate() {
        // Fragments (a lone [agent] table…) are completed with a vault.
        let text = if block.contains("vault =") {
            block.clone()
        } else {
            format!("vault = \"https://example.vault.azure.net\"\n{block}")
        };
        let fake_path = root().join("config").join(format!("readme-{i}.toml"));
        if let Err(e) = kvsync::config::parse(&text, &fake_path) {
            panic!(
                "{} TOML block {i} does not parse:\n{e}\n---\n{block}",
                file.display()
            );
        }
    }
}

#[test]
fn readme_toml_blocks_parse() {
    check_markdown(&root().join("README.md"));
}

#[test]
fn example_configs_load_and_compile() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let mut config = kvsync::config::load(&path)
            .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()));
        // Production examples name /etc/kvsync/templates (where the package
        // installs this repository's templates/): compile against the repo's.
        if config.agent.templates_dir == Path::new("/etc/kvsync/templates") {
            let repo = root().join("templates");
            for file in &mut config.files {
                if let kvsync::config::FileSource::Template(t) = &mut file.source {
                    *t = repo.join(t.strip_prefix("/etc/kvsync/templates").unwrap());
                }
            }
        }
        if let Err(errors) = kvsync::render::Renderer::compile(&config) {
            let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!(
                "{} templates do not compile:\n{}",
                path.display(),
                msgs.join("\n")
            );
        }
        seen += 1;
    }
    assert!(seen >= 2, "config/ holds the demo and the example config");
}

/// Issue 15's examples in docs/CONFIG.md (selections, fan-out, decode,
/// public certificates and keys, CCS) are valid configs whose templates
/// compile.
#[test]
fn config_md_issue15_examples_load_and_compile() {
    let text = std::fs::read_to_string(root().join("docs/CONFIG.md")).unwrap();
    let wanted = [
        "selected.web",
        "selection = \"db\"",
        "decode = \"base64\"",
        "public_only = true",
        "type = \"key\"",
        "ccs = true",
    ];
    let blocks: Vec<String> = toml_blocks(&text)
        .into_iter()
        .filter(|b| wanted.iter().any(|w| b.contains(w)))
        .collect();
    assert_eq!(blocks.len(), wanted.len(), "one example each");
    for block in blocks {
        let text = format!("vault = \"https://example.vault.azure.net\"\n{block}");
        let path = root().join("config").join("config-md.toml");
        let config = kvsync::config::parse(&text, &path)
            .unwrap_or_else(|e| panic!("does not parse:\n{e}\n---\n{block}"));
        if let Err(errors) = kvsync::render::Renderer::compile(&config) {
            let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("does not compile:\n{}\n---\n{block}", msgs.join("\n"));
        }
    }
}
