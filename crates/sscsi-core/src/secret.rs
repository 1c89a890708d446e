use std::fmt;

use zeroize::Zeroizing;

/// Secret material: fetched secret values, service-account tokens,
/// nodePublishSecretRef data.
///
/// The bytes are wiped when dropped, and `Debug`/`Display` print only the
/// length, so neither a log line nor a panic message can carry them. There is
/// deliberately no `Serialize` and no `Deref`: reading the bytes is always an
/// explicit [`SecretBytes::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Callers must not log or format them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as UTF-8, if they are. Callers must not log or format them.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl From<&str> for SecretBytes {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_bytes() {
        let s = SecretBytes::from("correct horse battery staple");
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("28 bytes"), "{shown}");
        assert_eq!(s.expose(), b"correct horse battery staple");
    }
}
