//! Secrets read from files: a password is never a flag (`ps` shows flags) and
//! never printed. systemd's `LoadCredential=` hands a service such a file in
//! `$CREDENTIALS_DIRECTORY`, so a `DynamicUser` service can read a root-only one.

use std::path::{Path, PathBuf};

/// Why a secret file could not be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the {what} file {} is empty", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("the {what} file {} holds more than one line", path.display())]
    Lines { what: &'static str, path: PathBuf },
}

/// Reads a one-line secret (`what` names it in errors, e.g. "redis password"); a
/// trailing newline (or CRLF) is not part of it.
pub fn read_secret_file(path: &Path, what: &'static str) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read { what, path: path.into(), source })?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(SecretError::Empty { what, path: path.into() });
    }
    if secret.contains('\n') {
        return Err(SecretError::Lines { what, path: path.into() });
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_loses_only_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in [("s3cret\n", "s3cret"), ("s3cret", "s3cret"), ("s3cret\r\n", "s3cret"), (" sp ace \n", " sp ace ")] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(read_secret_file(&path, "etcd password").unwrap(), expected);
        }
        for bad in ["", "\n", "a\nb\n"] {
            std::fs::write(&path, bad).unwrap();
            let err = read_secret_file(&path, "etcd password").unwrap_err().to_string();
            assert!(err.contains("etcd password") && err.contains(&path.display().to_string()), "{err}");
            assert!(!bad.is_empty() || err.contains("empty"), "{err}");
        }
        std::fs::write(&path, "hunter2\nhunter3\n").unwrap();
        let err = read_secret_file(&path, "etcd password").unwrap_err().to_string();
        assert!(err.contains("more than one line") && !err.contains("hunter"), "the error shows no secret: {err}");
        let err = read_secret_file(&dir.path().join("missing"), "etcd password").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
