//! The README's library example compiles in a crate whose only dependency
//! is `psync` (the doctests see the workspace's dev-dependencies too, so
//! they cannot tell).

use std::path::Path;
use std::process::Command;

/// The first `rust,no_run` block of the README's "Library" section, as the
/// body of a `main` that returns the example's error type.
fn library_example(readme: &str) -> String {
    let section = readme
        .split("\n## Library")
        .nth(1)
        .expect("README has a Library section");
    let start = section
        .find("```rust,no_run\n")
        .expect("the Library section has a rust example")
        + "```rust,no_run\n".len();
    let end = start + section[start..].find("\n```").expect("the example ends");
    let mut body = String::new();
    let mut ret = String::from("()");
    for line in section[start..end].lines() {
        match line.strip_prefix("# ") {
            // The hidden last line: `Ok::<(), psync::Error>(())`.
            Some(hidden) if hidden.starts_with("Ok::<") => {
                let ty = hidden
                    .trim_start_matches("Ok::<()")
                    .trim_start_matches(", ");
                ret = ty.split(">(())").next().unwrap_or("()").to_string();
                body.push_str(hidden);
            }
            Some(hidden) => body.push_str(hidden),
            None => body.push_str(line),
        }
        body.push('\n');
    }
    format!("fn main() -> Result<(), {ret}> {{\n{body}}}\n")
}

#[test]
fn library_example_needs_only_psync() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let main = library_example(&readme);
    let t = crate::util::TestDir::new("library_example_needs_only_psync");
    let krate = t.join("example");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-example\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
             [dependencies]\npsync = {{ path = {:?} }}\n\n[workspace]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(krate.join("src/main.rs"), &main).unwrap();
    // The workspace's lock file: the same versions, nothing to resolve.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["check", "--offline", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", root.join("target/readme-example"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the README's library example does not compile with psync as its only dependency:\n{main}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
