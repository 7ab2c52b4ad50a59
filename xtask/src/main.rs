//! Build-time helper, never shipped: `cargo xtask gen-docs DIR` writes the
//! man page (`DIR/man/kvsync.1`) and shell completions
//! (`DIR/completions/{kvsync.bash,_kvsync,kvsync.fish}`) generated from the
//! clap definitions in `kvsync::cli`, so they can't drift from the binary.
//! The Debian package (`cargo deb`, see deploy/debian/README.md) picks them
//! up from `target/assets/`. It only writes under DIR.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The binary name the man page and completions are for.
const BIN: &str = "kvsync";

/// Shells we ship completions for, with the file name each shell's
/// completion loader expects (bash-completion: the command name; zsh: `_cmd`;
/// fish: `cmd.fish`).
const SHELLS: &[(Shell, &str)] = &[
    (Shell::Bash, "kvsync"),
    (Shell::Zsh, "_kvsync"),
    (Shell::Fish, "kvsync.fish"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "gen-docs" => match gen_docs(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask gen-docs DIR");
            ExitCode::from(2)
        }
    }
}

fn gen_docs(dir: &Path) -> Result<(), String> {
    let man_dir = dir.join("man");
    let comp_dir = dir.join("completions");
    for d in [&man_dir, &comp_dir] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let cmd = kvsync::cli::Cli::command();

    // One page for `kvsync` plus one per subcommand (`kvsync-run.1`, ...),
    // named as the main page's SUBCOMMANDS section refers to them.
    clap_mangen::generate_to(cmd.clone(), &man_dir)
        .map_err(|e| format!("writing man pages to {}: {e}", man_dir.display()))?;

    for (shell, file) in SHELLS {
        let path = comp_dir.join(file);
        let mut out = Vec::new();
        clap_complete::generate(*shell, &mut cmd.clone(), BIN, &mut out);
        write(&path, &out)?;
    }
    Ok(())
}

// The workspace bans fs::write for product code (files are written only by
// kvsync::write, atomically); this build-time helper writes generated docs
// into target/, where a torn file is simply regenerated.
#[allow(clippy::disallowed_methods)]
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
