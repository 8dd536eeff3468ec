//! `scripts/psync`: a binary built already runs without a toolchain, as
//! any user; a build says so on stderr.

use crate::util::TestDir;
use crate::util::run::{cli_available, psync_bin};
use crate::util::user::test_user;
use std::path::Path;
use std::process::{Command, Output};

/// A copy of the repository's scripts with a built binary in
/// `target/release/`, and no sources: nothing is newer than the binary.
fn repo(t: &TestDir) -> std::path::PathBuf {
    let repo = t.join("repo");
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::create_dir_all(repo.join("target/release")).unwrap();
    std::fs::create_dir_all(repo.join("home")).unwrap();
    for s in ["psync", "setup.sh"] {
        std::fs::copy(here.join("scripts").join(s), repo.join("scripts").join(s)).unwrap();
    }
    std::fs::copy(psync_bin(), repo.join("target/release/psync")).unwrap();
    repo
}

/// `repo/scripts/psync --version` with a PATH without cargo and an empty
/// HOME (no ~/.cargo), as the test user when there is one.
fn run(repo: &Path, owner: Option<crate::util::user::User>) -> Output {
    let script = repo.join("scripts/psync");
    let mut c = match owner {
        Some(u) => {
            u.own(repo);
            u.command(&script)
        }
        None => Command::new(&script),
    };
    c.arg("--version")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", repo.join("home"))
        .output()
        .expect("run scripts/psync")
}

#[test]
fn scripts_psync_runs_a_built_binary_without_cargo() {
    if !cli_available() {
        skip!("the psync binary is not built (cargo build --workspace)");
    }
    assert!(
        !Path::new("/usr/bin/cargo").exists() && !Path::new("/bin/cargo").exists(),
        "this test needs a PATH without cargo"
    );
    let t = TestDir::new("scripts_psync_runs_a_built_binary_without_cargo");
    let repo = repo(&t);
    let user = test_user("scripts_psync_runs_a_built_binary_without_cargo");
    let out = run(&repo, user);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("psync "));
    assert!(err.is_empty(), "up to date: nothing to say: {err}");
    // A source newer than the binary, and no cargo to rebuild: the binary
    // runs as built, with a warning; nothing is installed.
    let src = repo.join("psync-cli/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.rs"), "fn main() {}\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(src.join("main.rs"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let out = run(&repo, user);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("psync "));
    assert!(err.contains("no cargo here to rebuild"), "{err}");
    assert!(!err.contains("install"), "{err}");
    assert!(!repo.join("home/.cargo").exists() && !repo.join("home/.rustup").exists());
}

#[test]
fn scripts_psync_says_it_builds() {
    // No binary: the script says it builds, then runs cargo (a stand-in
    // here, which "builds" a script in the target directory: a real build
    // takes minutes).
    let t = TestDir::new("scripts_psync_says_it_builds");
    let repo = t.join("repo");
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::create_dir_all(repo.join("bin")).unwrap();
    for s in ["psync", "setup.sh"] {
        std::fs::copy(here.join("scripts").join(s), repo.join("scripts").join(s)).unwrap();
    }
    let cargo = repo.join("bin/cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho \"cargo $*\" >&2\nmkdir -p \"$CARGO_TARGET_DIR/release\"\n\
         printf '#!/bin/sh\\necho built \"$@\"\\n' > \"$CARGO_TARGET_DIR/release/psync\"\n\
         chmod +x \"$CARGO_TARGET_DIR/release/psync\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(repo.join("scripts/psync"))
        .args(["sync", "a", "b"])
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", repo.join("bin").display()),
        )
        .env("HOME", &repo)
        .env("CARGO_TARGET_DIR", repo.join("out"))
        .output()
        .expect("run scripts/psync");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "built sync a b\n");
    let say = err.find("psync: building").expect("says it builds");
    assert!(err.contains("the first build takes a few minutes"), "{err}");
    let build = err
        .find("cargo build --release --manifest-path")
        .expect("built");
    assert!(say < build, "the message comes first: {err}");
    // The man page and completions are written beside the binary.
    let out_dir = repo.join("out");
    for (file, made_by) in [
        ("man/man1/psync.1", "built man"),
        ("completions/psync.bash", "built completions bash"),
        ("completions/_psync", "built completions zsh"),
        ("completions/psync.fish", "built completions fish"),
    ] {
        let text = std::fs::read_to_string(out_dir.join(file)).expect(file);
        assert_eq!(text.trim(), made_by, "{file}");
    }
}
